// Logs: a run's log lines as they arrive (polling with after_id, so each poll returns only
// new lines), filtered by task and minimum level; the polling stops once the server says the
// run has ended and every line is read. `LogStream` is also used on the task run page for one
// task run's lines.

import {
  errorMessage, formatClock, getJSON, h, pageHeader, poll, replaceQuery, shortId,
} from "./api.js";

const POLL_MS = 1000;
const MAX_LINES = 20000; // older lines are dropped from the page, not from the history
const LEVELS = { "": "All levels", DEBUG: "Debug+", INFO: "Info+", WARNING: "Warning+", ERROR: "Error+" };

export class LogStream {
  // `task` narrows the server query by task (run) name; `taskRunId` keeps only one run's lines.
  constructor(container, { runId, task = "", level = "", taskRunId = null }) {
    this.runId = runId;
    this.filter = { task, level, taskRunId };
    this.body = h("tbody");
    this.empty = h("p", { class: "muted" }, "No log lines yet.");
    this.scroller = h("div", { class: "log-scroll" }, h("table", { class: "log-table" }, this.body));
    container.append(this.empty, this.scroller);
    this.start();
  }

  start() {
    this.afterId = 0;
    this.count = 0;
    this.body.replaceChildren();
    this.empty.hidden = false;
    this.scroller.dataset.stream = "following";
    this.poller = poll((current) => this.fetch(current), POLL_MS);
  }

  restart(filter) {
    this.poller.stop();
    Object.assign(this.filter, filter);
    this.start();
  }

  async fetch(current) {
    const page = await getJSON(`api/runs/${encodeURIComponent(this.runId)}/logs`, {
      after_id: this.afterId, task: this.filter.task, level: this.filter.level });
    if (!current()) return "done"; // the filters changed while this request was out
    this.afterId = page.next_after_id;
    const lines = this.filter.taskRunId
      ? page.logs.filter((line) => line.task_run_id === this.filter.taskRunId) : page.logs;
    if (lines.length) this.append(lines);
    if (page.more) return "again";
    if (!page.run_ended) return undefined;
    this.scroller.dataset.stream = "ended"; // these were the run's last lines
    return "done";
  }

  append(lines) {
    // Follow the tail only if the reader is already at the bottom.
    const atBottom = this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - 4;
    const rows = lines.map((line) => h("tr", { class: `level-${line.level_name}`, "data-log-id": line.id },
      h("td", { class: "mono nowrap muted" }, formatClock(line.timestamp)),
      h("td", null, h("span", { class: `level level-${line.level_name}` }, line.level_name)),
      h("td", { class: "nowrap" }, line.task_run_id
        ? h("a", { href: `#/task-runs/${encodeURIComponent(line.task_run_id)}` }, line.task_run_name || shortId(line.task_run_id))
        : h("span", { class: "muted" }, "flow")),
      h("td", { class: "message mono" }, line.message)));
    this.body.append(...rows);
    this.count += rows.length;
    while (this.count > MAX_LINES) {
      this.body.firstChild.remove();
      this.count -= 1;
    }
    this.empty.hidden = true;
    if (atBottom) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  stop() {
    this.poller.stop();
  }
}

export function logsPage(root, [runId], query) {
  const task = h("select", { "aria-label": "Task", name: "task" }, h("option", { value: "" }, "All tasks"));
  const level = h("select", { "aria-label": "Level", name: "level" },
    Object.entries(LEVELS).map(([value, label]) => h("option", { value }, label)));
  level.value = query.get("level") || "";
  const title = h("span", { class: "muted" });
  const message = h("div");
  const box = h("div", { class: "panel" });
  root.append(
    h("nav", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ",
      h("a", { href: `#/runs/${encodeURIComponent(runId)}` }, shortId(runId)), " / logs"),
    pageHeader("Logs", title), h("div", { class: "filters" }, task, level), message, box);

  const stream = new LogStream(box, { runId, task: query.get("task") || "", level: level.value });
  const changed = () => {
    replaceQuery({ task: task.value, level: level.value });
    stream.restart({ task: task.value, level: level.value });
  };
  task.addEventListener("change", changed);
  level.addEventListener("change", changed);

  getJSON(`api/runs/${encodeURIComponent(runId)}`).then((run) => {
    title.textContent = `${run.flow_name} · ${run.flow_run_name}`;
    const names = [...new Set(run.task_runs.map((taskRun) => taskRun.task_name))].sort();
    task.append(...names.map((name) => h("option", { value: name }, name)));
    task.value = query.get("task") || "";
  }).catch((error) => message.replaceChildren(errorMessage(error)));
  return () => stream.stop();
}
