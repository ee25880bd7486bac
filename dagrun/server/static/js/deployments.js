// Deployments: one card per deployment with its schedule, next runs and last state, buttons
// to pause / resume it, and "Run" with a parameter form that queues a manual run for the
// `dagrun serve` serving it. Below each card, its queued requests and recent runs, live.
// A card's form survives the polling: only the facts and the table are redrawn.

import {
  errorMessage, formatParameters, formatTime, getJSON, h, pageHeader, poll, postJSON,
  shortId, stateBadge,
} from "./api.js";

const POLL_MS = 2000;
const REASONS = { schedule: "Schedule", manual: "Manual", trigger: "Trigger" };

export function deploymentsPage(root) {
  const list = h("div");
  const message = h("div");
  const summary = h("span", { class: "muted" });
  root.append(pageHeader("Deployments", summary), message, list);
  const cards = new Map();
  let lastText = null;

  async function refresh(current) {
    let deployments;
    try {
      deployments = await getJSON("api/deployments");
    } catch (error) {
      if (current()) message.replaceChildren(errorMessage(error));
      return;
    }
    if (!current()) return;
    message.replaceChildren();
    const text = JSON.stringify(deployments);
    if (text === lastText) return;
    lastText = text;
    summary.textContent = `${deployments.length} deployment${deployments.length === 1 ? "" : "s"}`;
    const names = new Set(deployments.map((deployment) => deployment.name));
    for (const child of [...list.children]) {
      if (!child.classList.contains("deployment-card")) child.remove(); // the "none yet" line
    }
    for (const [name, card] of cards) {
      if (!names.has(name)) {
        card.element.remove();
        cards.delete(name);
      }
    }
    deployments.forEach((deployment, index) => {
      let card = cards.get(deployment.name);
      if (!card) {
        card = makeCard(deployment, refreshNow);
        cards.set(deployment.name, card);
      }
      card.update(deployment);
      if (list.children[index] !== card.element) list.insertBefore(card.element, list.children[index] || null);
    });
    if (!deployments.length) {
      list.replaceChildren(h("p", { class: "muted" },
        "No deployments registered. `dagrun serve FILE` registers the deployments in FILE."));
    }
  }

  // After a click, poll again at once rather than at the next tick.
  let poller = poll(refresh, POLL_MS);
  function refreshNow() {
    poller.stop();
    lastText = null;
    poller = poll(refresh, POLL_MS);
  }
  return () => poller.stop();
}

function makeCard(deployment, refreshNow) {
  const name = deployment.name;
  const title = h("h2", { style: "text-transform:none;letter-spacing:0;font-size:16px;color:var(--text)" }, name);
  const badges = h("span");
  const pauseButton = h("button", { type: "button", class: "pause-toggle" });
  const runButton = h("button", { type: "button", class: "run-open" }, "Run…");
  const facts = h("dl", { class: "facts" });
  const formHolder = h("div");
  const notice = h("div", { class: "small", role: "status" });
  const recentBody = h("tbody");
  const element = h("section", { class: "panel deployment-card", "data-deployment": name },
    h("div", { class: "panel-head" },
      h("div", { style: "display:flex;gap:10px;align-items:center" }, title, badges),
      h("div", { style: "display:flex;gap:6px" }, runButton, pauseButton)),
    facts, formHolder, notice,
    h("table", { class: "runs-table deployment-runs" },
      h("thead", null, h("tr", null, ["Run", "Why", "State", "Started", "Parameters"]
        .map((heading) => h("th", null, heading)))),
      recentBody));
  let current = deployment;

  pauseButton.addEventListener("click", async () => {
    const action = current.paused ? "resume" : "pause";
    pauseButton.disabled = true;
    try {
      await postJSON(`api/deployments/${encodeURIComponent(name)}/${action}`);
      notice.replaceChildren(action === "pause" ? "Paused: no scheduled or triggered runs." : "Resumed.");
    } catch (error) {
      notice.replaceChildren(errorMessage(error));
    } finally {
      pauseButton.disabled = false;
      refreshNow();
    }
  });
  runButton.addEventListener("click", () => {
    if (formHolder.firstChild) {
      formHolder.replaceChildren();
      return;
    }
    formHolder.replaceChildren(runForm(current, (requestId) => {
      formHolder.replaceChildren();
      notice.replaceChildren(`Queued manual run request ${requestId}; \`dagrun serve\` starts it.`);
      refreshNow();
    }));
  });

  function update(next) {
    current = next;
    fill(badges,
      next.paused ? h("span", { class: "badge state-Cancelled paused-badge" }, "Paused") : null,
      next.last_run ? stateBadge(next.last_run.state) : null);
    pauseButton.textContent = next.paused ? "Resume" : "Pause";
    fill(facts,
      h("dt", null, "Flow"), h("dd", null, h("a", { href: `#/runs?flow=${encodeURIComponent(next.flow_name)}` },
        next.flow_name), h("span", { class: "muted small" }, `  ${next.flow_file}`)),
      h("dt", null, "Schedule"), h("dd", { class: "schedule" }, next.schedule),
      h("dt", null, "Next runs"), h("dd", { class: "next-runs" },
        next.paused ? "— (paused)" : next.next_runs.map((slot) => formatTime(Date.parse(slot) / 1000)).join(", ") || "—"),
      h("dt", null, "Last run"), h("dd", { class: "last-run" }, next.last_run ? runLink(next.last_run) : "—"),
      h("dt", null, "Limits"), h("dd", null,
        `max_active_runs ${next.max_active_runs} (${next.active_runs} active) · catch-up ${next.catchup ? "on" : "off"}`),
      next.triggers.length ? [h("dt", null, "Triggers"), h("dd", null, next.triggers.map(describeTrigger).join("; "))] : null,
      Object.keys(next.parameters).length
        ? [h("dt", null, "Parameters"), h("dd", { class: "mono small" }, formatParameters(next.parameters))] : null);
    const rows = [
      ...next.pending_requests.map((request) => h("tr", { "data-request-id": request.id },
        h("td", null, `request ${request.id}`), h("td", null, "Manual"),
        h("td", null, h("span", { class: "badge state-Pending" }, "Queued")),
        h("td", { class: "nowrap" }, formatTime(request.requested_at)),
        h("td", { class: "params" }, formatParameters(request.parameters)))),
      ...(next.requests || []).filter((request) => request.error).map((request) =>
        h("tr", { "data-request-id": request.id, class: "refused" },
          h("td", null, `request ${request.id}`), h("td", null, "Manual"),
          h("td", null, h("span", { class: "badge state-Failed" }, "Refused")),
          h("td", { class: "nowrap" }, formatTime(request.requested_at)),
          h("td", { class: "params error-text" }, request.error))),
      ...next.recent_runs.map((run) => h("tr", { "data-run-id": run.id, "data-state": run.state },
        h("td", null, runLink(run)),
        h("td", null, why(run)),
        h("td", null, stateBadge(run.state)),
        h("td", { class: "nowrap" }, formatTime(run.start_time || run.started_at)),
        h("td", { class: "params" }, formatParameters(run.parameters)))),
    ];
    recentBody.replaceChildren(...(rows.length ? rows
      : [h("tr", null, h("td", { colspan: 5, class: "empty" }, "No runs yet."))]));
  }

  return { element, update };
}

// replaceChildren, skipping absent parts and flattening lists (as h() does).
function fill(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((child) =>
    child !== null && child !== undefined && child !== false));
}

function runLink(run) {
  // A run shows up in the history once its process starts recording; until then, its id.
  return run.flow_run_id
    ? h("a", { href: `#/runs/${encodeURIComponent(run.flow_run_id)}`, class: "mono" }, shortId(run.id))
    : h("span", { class: "mono" }, shortId(run.id));
}

function why(run) {
  if (run.reason === "schedule") return `Slot ${formatTime(Date.parse(run.slot) / 1000)}`;
  if (run.reason === "manual") return `Manual (request ${run.request_id})`;
  if (run.reason === "trigger") return `After run ${shortId(run.upstream_run_id)}`;
  return REASONS[run.reason] || run.reason;
}

function describeTrigger(trigger) {
  const upstream = trigger.after_deployment !== null
    ? `deployment ${trigger.after_deployment}` : `flow ${trigger.after_flow}`;
  const passed = trigger.parameter ? ` (run id as ${trigger.parameter})` : "";
  return `after a ${trigger.states.join(" or ")} run of ${upstream}${passed}`;
}

// One input per flow parameter, filled with the deployment's default (else the flow's);
// only the fields changed are sent, so the rest keep their defaults. Values are read as JSON
// unless the parameter is a `str`, as `dagrun deployments run --param` does.
function runForm(deployment, done) {
  const fields = deployment.parameter_schema.map((parameter) => {
    const value = parameter.name in deployment.parameters
      ? deployment.parameters[parameter.name] : parameter.default;
    const text = value === null || value === undefined ? ""
      : parameter.type === "str" && typeof value === "string" ? value : JSON.stringify(value);
    const input = h("input", { type: "text", name: parameter.name, value: text,
      placeholder: parameter.type || "JSON value", "aria-label": parameter.name,
      style: "min-width:260px" });
    return { parameter, input, initial: text };
  });
  const error = h("div");
  const form = h("form", { class: "panel run-form", "aria-label": `Run ${deployment.name}` },
    h("h2", null, `Run ${deployment.name} now`),
    fields.length ? h("dl", { class: "facts" }, fields.map(({ parameter, input }) => [
      h("dt", null, h("label", null, parameter.name,
        h("span", { class: "muted small" }, parameter.type ? ` : ${parameter.type}` : ""),
        parameter.required ? h("span", { class: "error-text" }, " *") : null)),
      h("dd", null, input)])) : h("p", { class: "muted" }, "This flow takes no parameters."),
    error,
    h("div", { style: "display:flex;gap:6px" },
      h("button", { type: "submit" }, "Queue run"),
      h("button", { type: "button", class: "link", onclick: () => form.remove() }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const parameters = {};
    for (const { parameter, input, initial } of fields) {
      if (input.value === initial) continue;
      parameters[parameter.name] = parseValue(input.value, parameter.type);
    }
    try {
      const answer = await postJSON(`api/deployments/${encodeURIComponent(deployment.name)}/run`, { parameters });
      done(answer.request_id);
    } catch (failure) {
      error.replaceChildren(errorMessage(failure));
    }
  });
  return form;
}

function parseValue(text, type) {
  if (type === "str") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
