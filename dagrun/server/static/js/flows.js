// Flows: one card per flow with its success rate, median duration and a chart of its
// recent runs (duration over time, each dot coloured by outcome; click one to open it).

import {
  errorMessage, formatDuration, formatTime, getJSON, h, pageHeader, poll, stateBadge, svg,
} from "./api.js";

const POLL_MS = 5000;
const CHART_W = 640;
const CHART_H = 150;
const PAD = { left: 56, right: 12, top: 10, bottom: 22 };

export function flowsPage(root) {
  const list = h("div", { class: "flow-cards" });
  const message = h("div");
  root.append(pageHeader("Flows"), message, list);
  let lastText = null;
  const poller = poll(async () => {
    let flows;
    try {
      flows = await getJSON("api/flows");
    } catch (error) {
      message.replaceChildren(errorMessage(error));
      return;
    }
    message.replaceChildren();
    const text = JSON.stringify(flows);
    if (text === lastText) return;
    lastText = text;
    list.replaceChildren(...flows.map(flowCard));
    if (!flows.length) list.append(h("p", { class: "muted" }, "No flow has run yet."));
  }, POLL_MS);
  return () => poller.stop();
}

function flowCard(flow) {
  const rate = flow.success_rate === null ? "—" : `${Math.round(flow.success_rate * 100)}%`;
  return h("section", { class: "panel flow-card", "data-flow": flow.flow_name },
    h("div", { class: "panel-head" },
      h("h2", null, h("a", { href: `#/runs?flow=${encodeURIComponent(flow.flow_name)}` }, flow.flow_name)),
      flow.last_state ? stateBadge(flow.last_state) : null),
    h("dl", { class: "stats" },
      h("div", null, h("dt", null, "Runs"), h("dd", null, String(flow.run_count))),
      h("div", null, h("dt", null, "Success rate"), h("dd", { class: "success-rate" }, rate)),
      h("div", null, h("dt", null, "Median duration"), h("dd", null, formatDuration(flow.median_duration))),
      h("div", null, h("dt", null, "Last run"), h("dd", null, formatTime(flow.last_start_time)))),
    chart(flow.recent_runs || []));
}

function chart(runs) {
  const points = runs.filter((run) => run.start_time !== null);
  if (!points.length) return h("p", { class: "muted" }, "No runs to chart.");
  const t0 = Math.min(...points.map((run) => run.start_time));
  const t1 = Math.max(...points.map((run) => run.start_time), t0 + 1);
  const top = Math.max(...points.map((run) => run.duration || 0), 0.001);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (CHART_W - PAD.left - PAD.right);
  const y = (d) => CHART_H - PAD.bottom - (d / top) * (CHART_H - PAD.top - PAD.bottom);
  const base = CHART_H - PAD.bottom;
  const line = points.filter((run) => run.duration !== null)
    .map((run, i) => `${i ? "L" : "M"}${x(run.start_time).toFixed(1)},${y(run.duration).toFixed(1)}`).join(" ");
  return svg("svg", { class: "flow-chart", viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img",
    "aria-label": "Run durations over time, coloured by outcome" },
  svg("line", { class: "axis", x1: PAD.left, y1: base, x2: CHART_W - PAD.right, y2: base }),
  svg("line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: base }),
  svg("text", { class: "tick", x: PAD.left - 6, y: PAD.top + 8, "text-anchor": "end" }, formatDuration(top)),
  svg("text", { class: "tick", x: PAD.left - 6, y: base, "text-anchor": "end" }, "0"),
  svg("text", { class: "tick", x: PAD.left, y: CHART_H - 6 }, formatTime(t0)),
  svg("text", { class: "tick", x: CHART_W - PAD.right, y: CHART_H - 6, "text-anchor": "end" }, formatTime(t1)),
  line ? svg("path", { class: "trend", d: line }) : null,
  points.map((run) => svg("a", { href: `#/runs/${encodeURIComponent(run.id)}` },
    svg("circle", { class: `point state-${run.state}`, "data-state": run.state, cx: x(run.start_time),
      cy: y(run.duration || 0), r: 5 },
    svg("title", null, `${run.state} · ${formatDuration(run.duration)} · ${formatTime(run.start_time)}`)))));
}
