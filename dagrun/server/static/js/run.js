// Run detail: the run's state, parameters and error; its dependency graph and timeline;
// and its task runs with attempts and cache hits. While the run is going the page polls
// and updates in place (graph colours, timeline, counts) without a reload.

import {
  ACTIVE_STATES, STATE_PRIORITY, STATES, countStates, elapsed, errorMessage, errorPanel,
  formatDuration, formatTime, getJSON, h, pageHeader, poll, postJSON, shortId, stateBadge, stateCounts,
} from "./api.js";
import { Timeline } from "./gantt.js";
import { DependencyGraph } from "./graph.js";

const POLL_MS = 1500;
const TABLE_ROWS = 200;

const openTaskRun = (id) => { location.hash = `#/task-runs/${encodeURIComponent(id)}`; };

export function runPage(root, [runId]) {
  const header = h("div");
  const details = h("div");
  const groupPanel = h("aside", { class: "group-panel", hidden: true });
  const graphBox = h("div", { class: "graph" });
  const timelineBox = h("div", { class: "gantt" });
  const tableBox = h("div");
  const message = h("div");
  root.append(message, header, details,
    h("section", { class: "panel" }, h("h2", null, "Dependency graph"),
      h("div", { class: "graph-area" }, graphBox, groupPanel)),
    h("section", { class: "panel" }, h("h2", null, "Timeline by worker"), timelineBox),
    h("section", { class: "panel" }, h("h2", null, "Task runs"), tableBox));

  const graph = new DependencyGraph(graphBox, {
    onOpenTaskRun: openTaskRun,
    onOpenGroup: (node, expand) => showGroup(groupPanel, node, expand),
  });
  const timeline = new Timeline(timelineBox, { onOpenTaskRun: openTaskRun });
  const table = new TaskRunTable(tableBox);

  let lastText = null;
  const poller = poll(async () => {
    let run;
    try {
      run = await getJSON(`api/runs/${encodeURIComponent(runId)}`);
    } catch (error) {
      message.replaceChildren(errorMessage(error));
      return error.status === 404 ? "done" : undefined;
    }
    message.replaceChildren();
    const text = JSON.stringify(run);
    if (text !== lastText) {
      lastText = text;
      header.replaceChildren(runHeader(run));
      details.replaceChildren(runDetails(run));
      graph.update(run.task_runs);
      timeline.update(run.task_runs);
      table.update(run.task_runs);
      root.dataset.runState = run.state;
    }
    return ACTIVE_STATES.has(run.state) ? undefined : "done";
  }, POLL_MS);
  return () => {
    poller.stop();
    graph.destroy();
  };
}

function runHeader(run) {
  const active = ACTIVE_STATES.has(run.state);
  const cancel = active && !run.cancel_requested
    ? h("button", { type: "button", class: "danger", onclick: async (event) => {
      event.target.disabled = true;
      try {
        await postJSON(`api/runs/${encodeURIComponent(run.id)}/cancel`);
        event.target.textContent = "Cancel requested";
      } catch (error) {
        event.target.textContent = error.message;
      }
    } }, "Cancel run")
    : null;
  return h("div", null,
    h("nav", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ",
      h("a", { href: `#/runs?flow=${encodeURIComponent(run.flow_name)}` }, run.flow_name)),
    pageHeader(run.flow_run_name || shortId(run.id), stateBadge(run.state),
      run.cancel_requested && active ? h("span", { class: "muted" }, "cancel requested") : null,
      h("span", { class: "spacer" }),
      h("a", { class: "button", href: `#/runs/${encodeURIComponent(run.id)}/logs` }, "Logs"),
      cancel));
}

function runDetails(run) {
  const facts = [
    ["Flow", run.flow_name],
    ["Run id", h("span", { class: "mono" }, run.id)],
    ["Started", formatTime(run.start_time)],
    ["Ended", formatTime(run.end_time)],
    ["Duration", formatDuration(elapsed(run))],
    ["Executor", [run.executor, run.address].filter(Boolean).join(" at ") || "—"],
    ["Driver", run.host ? `${run.host} (pid ${run.pid})` : "—"],
  ];
  if (run.deployment) facts.push(["Deployment", run.deployment]);
  if (run.parent_flow_run_id) {
    facts.push(["Parent run", h("a", { href: `#/runs/${run.parent_flow_run_id}` }, shortId(run.parent_flow_run_id))]);
  }
  const parameters = Object.entries(run.parameters || {});
  return h("div", { class: "detail-grid" },
    h("section", { class: "panel" },
      h("dl", { class: "facts" }, facts.map(([name, value]) => [h("dt", null, name), h("dd", null, value)])),
      stateCounts(countStates(run.task_runs))),
    h("section", { class: "panel" }, h("h2", null, "Parameters"),
      parameters.length
        ? h("table", { class: "kv" }, parameters.map(([name, value]) =>
          h("tr", null, h("th", null, name), h("td", { class: "mono" }, JSON.stringify(value)))))
        : h("p", { class: "muted" }, "No parameters.")),
    run.error || run.traceback ? errorPanel(run.error || run.message, run.traceback, run.full_traceback) : null,
    run.subflow_runs && run.subflow_runs.length ? h("section", { class: "panel" },
      h("h2", null, "Subflow runs"), h("ul", null, run.subflow_runs.map((sub) =>
        h("li", null, h("a", { href: `#/runs/${sub.id}` }, sub.flow_run_name), " ", stateBadge(sub.state)))))
      : null);
}

function showGroup(panel, node, expand) {
  const order = (taskRun) => STATE_PRIORITY.indexOf(taskRun.state);
  const members = [...node.members].sort((a, b) => order(a) - order(b));
  panel.replaceChildren(
    h("div", { class: "panel-head" }, h("strong", null, `${node.taskName} × ${node.members.length}`),
      h("button", { type: "button", class: "link", "aria-label": "Close",
        onclick: () => { panel.hidden = true; } }, "✕")),
    stateCounts(node.counts),
    expand ? h("button", { type: "button", onclick: () => { panel.hidden = true; expand(); } },
      `Expand into ${node.members.length} nodes`) : h("p", { class: "muted" }, "Too many to expand; pick one below."),
    h("ul", { class: "member-list" }, members.slice(0, 100).map((taskRun) =>
      h("li", null, h("a", { href: `#/task-runs/${encodeURIComponent(taskRun.id)}` },
        taskRun.task_run_name || shortId(taskRun.id)), " ", stateBadge(taskRun.state)))),
    members.length > 100 ? h("p", { class: "muted" }, `…and ${members.length - 100} more (see Task runs below)`) : null);
  panel.hidden = false;
}

class TaskRunTable {
  constructor(container) {
    this.state = h("select", { "aria-label": "Task state" }, h("option", { value: "" }, "All states"),
      STATES.map((state) => h("option", { value: state }, state)));
    this.search = h("input", { type: "search", placeholder: "Filter by task name", "aria-label": "Filter task runs" });
    this.body = h("tbody");
    this.footer = h("p", { class: "muted" });
    this.state.addEventListener("change", () => this.draw());
    this.search.addEventListener("input", () => this.draw());
    container.append(h("div", { class: "filters" }, this.state, this.search),
      h("table", { class: "task-table" }, h("thead", null, h("tr", null,
        ["Task run", "State", "Worker", "Start", "Duration", "Attempts", "Cache"].map((t) => h("th", null, t)))),
      this.body), this.footer);
  }

  update(taskRuns) {
    // Trouble first: failed, then retried, then the rest in submission order.
    const rank = (taskRun) => (["Failed", "Crashed"].includes(taskRun.state) ? 0 : taskRun.attempts > 1 ? 1 : 2);
    this.taskRuns = taskRuns.map((taskRun, i) => [rank(taskRun), i, taskRun])
      .sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((entry) => entry[2]);
    this.draw();
  }

  draw() {
    const state = this.state.value;
    const text = this.search.value.trim().toLowerCase();
    const shown = this.taskRuns.filter((taskRun) => (!state || taskRun.state === state) &&
      (!text || (taskRun.task_run_name || taskRun.task_name).toLowerCase().includes(text)));
    this.body.replaceChildren(...shown.slice(0, TABLE_ROWS).map((taskRun) => h("tr", {
      "data-task-run-id": taskRun.id, "data-state": taskRun.state },
    h("td", null, h("a", { href: `#/task-runs/${encodeURIComponent(taskRun.id)}` },
      taskRun.task_run_name || taskRun.task_name),
    taskRun.error ? h("div", { class: "error-text small" }, taskRun.error) : null),
    h("td", null, stateBadge(taskRun.state)),
    h("td", { class: "mono small" }, taskRun.worker || "—"),
    h("td", { class: "nowrap" }, formatTime(taskRun.start_time)),
    h("td", { class: "num" }, formatDuration(elapsed(taskRun))),
    h("td", { class: "num" }, taskRun.attempts > 1 ? h("span", { class: "retried" }, `${taskRun.attempts}`) : String(taskRun.attempts ?? 0)),
    h("td", null, cacheCell(taskRun)))));
    this.footer.textContent = shown.length > TABLE_ROWS
      ? `Showing ${TABLE_ROWS} of ${shown.length} task runs; filter to narrow down.`
      : `${shown.length} task run${shown.length === 1 ? "" : "s"}`;
  }
}

export function cacheCell(taskRun) {
  if (!taskRun.cache_key) return h("span", { class: "muted" }, "—");
  const hit = taskRun.cache_hit === true;
  return h("span", { class: hit ? "cache-hit" : "cache-miss", title: taskRun.cache_key },
    hit ? "hit " : taskRun.cache_hit === false ? "miss " : "", h("span", { class: "mono small" }, taskRun.cache_key.slice(0, 10)));
}
