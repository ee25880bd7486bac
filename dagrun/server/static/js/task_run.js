// Task run: its state, timings, worker, result size and cache key; each attempt with its
// error; its upstream task runs; the traceback (the user's code first, the full one on a
// toggle); and its own log lines.

import {
  ACTIVE_STATES, elapsed, errorMessage, errorPanel, formatBytes, formatClock, formatDuration, formatTime,
  getJSON, h, pageHeader, poll, shortId, stateBadge,
} from "./api.js";
import { LogStream } from "./logs.js";
import { cacheCell } from "./run.js";

const POLL_MS = 1500;

export function taskRunPage(root, [taskRunId]) {
  const content = h("div");
  const logsBox = h("section", { class: "panel" }, h("h2", null, "Logs"));
  root.append(content, logsBox);
  let stream = null;
  let lastText = null;
  const poller = poll(async () => {
    let taskRun;
    try {
      taskRun = await getJSON(`api/task-runs/${encodeURIComponent(taskRunId)}`);
    } catch (error) {
      content.replaceChildren(errorMessage(error));
      return error.status === 404 ? "done" : undefined;
    }
    const text = JSON.stringify(taskRun);
    if (text !== lastText) {
      lastText = text;
      content.replaceChildren(...render(taskRun));
    }
    if (!stream) {
      stream = new LogStream(logsBox, { runId: taskRun.flow_run_id,
        task: taskRun.task_run_name || taskRun.task_name, taskRunId: taskRun.id });
    }
    return ACTIVE_STATES.has(taskRun.state) ? undefined : "done";
  }, POLL_MS);
  return () => {
    poller.stop();
    if (stream) stream.stop();
  };
}

function render(taskRun) {
  const runHref = `#/runs/${encodeURIComponent(taskRun.flow_run_id)}`;
  const facts = [
    ["Task", taskRun.task_name],
    ["Task run id", h("span", { class: "mono" }, taskRun.id)],
    ["Flow run", h("a", { href: runHref }, shortId(taskRun.flow_run_id))],
    ["Worker", taskRun.worker || "—"],
    ["Created", formatTime(taskRun.created)],
    ["Started", formatTime(taskRun.start_time)],
    ["Ended", formatTime(taskRun.end_time)],
    ["Duration", formatDuration(elapsed(taskRun))],
    ["Attempts", String(taskRun.attempts ?? 0)],
    ["Result size", formatBytes(taskRun.result_size)],
    ["Cache", cacheCell(taskRun)],
  ];
  if (taskRun.cache_key) facts.push(["Cache key", h("span", { class: "mono small" }, taskRun.cache_key)]);
  const attempts = taskRun.attempt_history || [];
  return [
    h("nav", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ",
      h("a", { href: runHref }, shortId(taskRun.flow_run_id)), " / task run"),
    pageHeader(taskRun.task_run_name || taskRun.task_name, stateBadge(taskRun.state)),
    h("div", { class: "detail-grid" },
      h("section", { class: "panel" }, h("dl", { class: "facts" },
        facts.map(([name, value]) => [h("dt", null, name), h("dd", null, value)]))),
      h("section", { class: "panel" }, h("h2", null, "Attempts"),
        attempts.length ? h("table", { class: "attempts" },
          h("thead", null, h("tr", null, ["#", "Start", "Duration", "Outcome"].map((t) => h("th", null, t)))),
          h("tbody", null, attempts.map((attempt) => h("tr", { "data-attempt": attempt.attempt },
            h("td", null, String(attempt.attempt)),
            h("td", { class: "mono" }, attempt.start_time ? formatClock(attempt.start_time) : "—"),
            h("td", { class: "num" }, formatDuration(attempt.duration)),
            h("td", null, attempt.error ? h("span", { class: "error-text" }, attempt.error)
              : attempt.end_time ? "ok" : "running")))))
          : h("p", { class: "muted" }, "No attempt yet."),
        h("h2", null, "Upstream"),
        taskRun.upstream_runs && taskRun.upstream_runs.length
          ? h("ul", { class: "upstream" }, taskRun.upstream_runs.map((upstream) => h("li", null,
            h("a", { href: `#/task-runs/${encodeURIComponent(upstream.id)}` },
              upstream.task_run_name || shortId(upstream.id)), " ", upstream.state ? stateBadge(upstream.state) : null)))
          : h("p", { class: "muted" }, "None."),
        h("h2", null, "States"),
        h("ol", { class: "states" }, (taskRun.state_history || []).map((entry) =>
          h("li", null, stateBadge(entry.state), " ", h("span", { class: "mono muted" }, formatClock(entry.timestamp)),
            entry.message ? ` ${entry.message}` : ""))))),
    errorPanel(taskRun.error, taskRun.traceback, taskRun.full_traceback),
  ];
}
