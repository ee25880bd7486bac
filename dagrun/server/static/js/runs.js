// Runs: a live table of flow runs with filters by flow, state and time window, and a
// search by id. Filters live in the fragment (#/runs?flow=etl&state=Failed) so a filtered
// view can be reloaded and shared.

import {
  ACTIVE_STATES, STATES, elapsed, errorMessage, formatDuration, formatParameters,
  formatTime, getJSON, h, pageHeader, poll, replaceQuery, shortId, stateBadge,
} from "./api.js";

const POLL_MS = 2000;
const WINDOWS = { "": "Any time", "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days" };
const WINDOW_SECONDS = { "1h": 3600, "24h": 86400, "7d": 604800 };

export function runsPage(root, _params, query) {
  const filters = {
    flow: query.get("flow") || "",
    state: query.get("state") || "",
    window: query.get("window") || "",
    q: query.get("q") || "",
  };
  const flowSelect = h("select", { name: "flow", "aria-label": "Flow" },
    h("option", { value: "" }, "All flows"));
  const stateSelect = h("select", { name: "state", "aria-label": "State" },
    h("option", { value: "" }, "All states"),
    STATES.map((state) => h("option", { value: state }, state)));
  const windowSelect = h("select", { name: "window", "aria-label": "Time window" },
    Object.entries(WINDOWS).map(([value, label]) => h("option", { value }, label)));
  const search = h("input", { type: "search", name: "q", placeholder: "Search by run id or name",
    "aria-label": "Search by run id", value: filters.q });
  stateSelect.value = filters.state;
  windowSelect.value = filters.window;
  const summary = h("span", { class: "muted" });
  const body = h("tbody");
  const message = h("div");

  root.append(
    pageHeader("Flow runs", summary),
    h("div", { class: "filters" }, flowSelect, stateSelect, windowSelect, search),
    message,
    h("table", { class: "runs-table" },
      h("thead", null, h("tr", null, ["Flow", "Run", "State", "Start", "Duration",
        "Parameters"].map((title) => h("th", null, title)))),
      body),
  );

  let lastText = null;
  let rows = [];
  async function refresh(current) {
    const since = WINDOW_SECONDS[filters.window]
      ? Math.floor(Date.now() / 1000) - WINDOW_SECONDS[filters.window] : undefined;
    let runs;
    try {
      runs = await getJSON("api/runs", { flow: filters.flow, state: filters.state,
        q: filters.q.trim(), since, limit: 200 });
    } catch (error) {
      if (current()) message.replaceChildren(errorMessage(error));
      return;
    }
    if (!current()) return; // the filters changed while this request was out
    message.replaceChildren();
    const text = JSON.stringify(runs);
    // Redraw only when something changed, so a row is not replaced under the pointer;
    // running runs' durations still tick.
    if (text !== lastText) {
      lastText = text;
      rows = runs.map(runRow);
      body.replaceChildren(...rows.map((row) => row.element));
      if (!runs.length) {
        body.append(h("tr", null, h("td", { colspan: 6, class: "empty" },
          filters.flow || filters.state || filters.q || filters.window
            ? "No flow runs match these filters."
            : "No flow runs yet. Run a flow with `dagrun run FILE` and it appears here.")));
      }
      summary.textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}`;
    }
    for (const row of rows) row.tick();
  }

  let poller = poll(refresh, POLL_MS);
  function changed() {
    filters.flow = flowSelect.value;
    filters.state = stateSelect.value;
    filters.window = windowSelect.value;
    filters.q = search.value;
    replaceQuery(filters);
    poller.stop();
    lastText = null;
    poller = poll(refresh, POLL_MS);
  }
  let typing = null;
  flowSelect.addEventListener("change", changed);
  stateSelect.addEventListener("change", changed);
  windowSelect.addEventListener("change", changed);
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(changed, 250);
  });

  getJSON("api/flows").then((flows) => {
    for (const flow of flows) flowSelect.append(h("option", { value: flow.flow_name }, flow.flow_name));
    flowSelect.value = filters.flow;
  }).catch(() => {});

  return () => {
    poller.stop();
    clearTimeout(typing);
  };
}

function runRow(run) {
  const href = `#/runs/${encodeURIComponent(run.id)}`;
  const duration = h("td", { class: "num" }, formatDuration(elapsed(run)));
  const parameters = formatParameters(run.parameters);
  const element = h("tr", { class: "clickable", "data-run-id": run.id, "data-state": run.state,
    onclick: (event) => { if (event.target.tagName !== "A") location.hash = href; } },
  h("td", null, run.flow_name),
  h("td", null, h("a", { href }, run.flow_run_name || shortId(run.id)),
    h("span", { class: "muted mono" }, ` ${shortId(run.id)}`)),
  h("td", null, stateBadge(run.state)),
  h("td", { class: "nowrap" }, formatTime(run.start_time)),
  duration,
  h("td", { class: "params mono", title: parameters }, parameters));
  return {
    element,
    tick() {
      if (ACTIVE_STATES.has(run.state)) duration.textContent = formatDuration(elapsed(run));
    },
  };
}
