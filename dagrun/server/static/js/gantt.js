// The timeline of a flow run: one bar per task run from start to end, in rows by worker.
//
// Drawn on a canvas rather than as DOM or SVG elements, so 5,000 bars cost one draw call
// each instead of 5,000 live elements. Task runs that overlapped on one worker (its
// threads) are packed greedily into lanes under the worker's name. Hovering a bar names it;
// clicking opens its task run.

import { ACTIVE_STATES, formatClock, formatDuration, h } from "./api.js";

const LABEL_W = 170;
const LANE_H = 14;
const AXIS_H = 22;
const WORKER_GAP = 6;
const MAX_LANES_PER_WORKER = 64; // beyond this, bars overlap in the last lane

function workerLabel(taskRun) {
  if (taskRun.worker) return taskRun.worker;
  return taskRun.state === "Cached" ? "(cache hit)" : "(no worker)";
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return step || raw;
}

export class Timeline {
  constructor(container, { onOpenTaskRun }) {
    this.onOpenTaskRun = onOpenTaskRun;
    this.canvas = h("canvas", { class: "gantt-canvas", "aria-label": "Task run timeline" });
    this.tooltip = h("div", { class: "tooltip", hidden: true });
    this.empty = h("p", { class: "muted", hidden: true }, "No task run has started yet.");
    this.scroller = h("div", { class: "gantt-scroll" }, this.canvas, this.tooltip);
    container.append(this.empty, this.scroller);
    this.canvas.addEventListener("mousemove", (event) => this.hover(event));
    this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });
    this.canvas.addEventListener("click", (event) => {
      const bar = this.barAt(event);
      if (bar) this.onOpenTaskRun(bar.taskRun.id);
    });
  }

  update(taskRuns) {
    const now = Date.now() / 1000;
    const bars = [];
    for (const taskRun of taskRuns) {
      if (taskRun.start_time === null || taskRun.start_time === undefined) continue;
      let end = taskRun.end_time;
      if (end === null || end === undefined) end = ACTIVE_STATES.has(taskRun.state) ? now : taskRun.start_time;
      bars.push({ taskRun, start: taskRun.start_time, end: Math.max(end, taskRun.start_time) });
    }
    this.empty.hidden = bars.length > 0;
    this.scroller.hidden = bars.length === 0;
    if (!bars.length) return;
    bars.sort((a, b) => a.start - b.start);
    const byWorker = new Map();
    for (const bar of bars) {
      const label = workerLabel(bar.taskRun);
      if (!byWorker.has(label)) byWorker.set(label, []);
      byWorker.get(label).push(bar);
    }
    this.rows = []; // one entry per lane: { worker, first, bars }
    for (const worker of [...byWorker.keys()].sort()) {
      const laneEnds = [];
      const lanes = [];
      for (const bar of byWorker.get(worker)) {
        let lane = laneEnds.findIndex((end) => end <= bar.start);
        if (lane < 0) {
          lane = laneEnds.length < MAX_LANES_PER_WORKER ? laneEnds.length : laneEnds.length - 1;
          if (lane === laneEnds.length) { laneEnds.push(0); lanes.push([]); }
        }
        laneEnds[lane] = Math.max(laneEnds[lane], bar.end);
        lanes[lane].push(bar);
      }
      lanes.forEach((laneBars, i) => this.rows.push({ worker, first: i === 0, bars: laneBars }));
    }
    // Each lane's top edge, with a gap before every worker but the first.
    let top = AXIS_H - WORKER_GAP;
    this.tops = this.rows.map((row) => {
      top += row.first ? LANE_H + WORKER_GAP : LANE_H;
      return top - LANE_H;
    });
    this.start = bars[0].start;
    this.end = Math.max(...bars.map((bar) => bar.end), this.start + 0.001);
    this.draw();
  }

  rowTop(index) {
    return this.tops[index];
  }

  draw() {
    const styles = getComputedStyle(document.documentElement);
    const colour = (state) => styles.getPropertyValue(`--state-${state}`).trim() || "#888";
    const width = Math.max(this.scroller.clientWidth, 400);
    const height = this.rowTop(this.rows.length - 1) + LANE_H + 4;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    const context = this.canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    this.plotWidth = width - LABEL_W - 10;
    const span = this.end - this.start;
    const xOf = (t) => LABEL_W + ((t - this.start) / span) * this.plotWidth;

    context.font = "11px system-ui, sans-serif";
    context.textBaseline = "middle";
    const step = niceStep(span, Math.floor(this.plotWidth / 110));
    for (let t = 0; t <= span + 1e-9; t += step) {
      const x = xOf(this.start + t);
      context.fillStyle = styles.getPropertyValue("--grid").trim() || "#eee";
      context.fillRect(x, AXIS_H - 4, 1, height);
      context.fillStyle = styles.getPropertyValue("--muted").trim() || "#666";
      context.fillText(`+${formatDuration(t)}`, x + 3, AXIS_H / 2);
    }
    this.rows.forEach((row, index) => {
      const top = this.rowTop(index);
      if (row.first) {
        context.fillStyle = styles.getPropertyValue("--text").trim() || "#222";
        const label = row.worker.length > 26 ? `…${row.worker.slice(-25)}` : row.worker;
        context.fillText(label, 6, top + LANE_H / 2);
      }
      for (const bar of row.bars) {
        const x = xOf(bar.start);
        context.fillStyle = colour(bar.taskRun.state);
        context.fillRect(x, top + 1, Math.max(xOf(bar.end) - x, 1.5), LANE_H - 3);
      }
    });
    this.canvas.dataset.bars = String(this.rows.reduce((sum, row) => sum + row.bars.length, 0));
  }

  barAt(event) {
    if (!this.rows) return null;
    const box = this.canvas.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    const index = this.rows.findIndex((_, i) => y >= this.rowTop(i) && y < this.rowTop(i) + LANE_H);
    if (index < 0 || x < LABEL_W) return null;
    const t = this.start + ((x - LABEL_W) / this.plotWidth) * (this.end - this.start);
    // A bar narrower than 3 px is still hoverable: accept a few pixels' worth of slack.
    const slack = (3 / this.plotWidth) * (this.end - this.start);
    const bars = this.rows[index].bars;
    let low = 0;
    let high = bars.length - 1;
    while (low < high) { // the last bar starting at or before t + slack
      const middle = Math.ceil((low + high) / 2);
      if (bars[middle].start <= t + slack) low = middle; else high = middle - 1;
    }
    for (let i = low; i >= 0 && i >= low - 8; i -= 1) {
      if (bars[i].start <= t + slack && bars[i].end >= t - slack) return bars[i];
    }
    return null;
  }

  hover(event) {
    const bar = this.barAt(event);
    this.canvas.style.cursor = bar ? "pointer" : "default";
    if (!bar) {
      this.tooltip.hidden = true;
      return;
    }
    const taskRun = bar.taskRun;
    this.tooltip.replaceChildren(
      h("strong", null, taskRun.task_run_name || taskRun.task_name), h("br"),
      `${taskRun.state} · ${formatDuration(bar.end - bar.start)}`, h("br"),
      `${formatClock(bar.start)} on ${workerLabel(taskRun)}`);
    const box = this.scroller.getBoundingClientRect();
    this.tooltip.style.left = `${event.clientX - box.left + this.scroller.scrollLeft + 12}px`;
    this.tooltip.style.top = `${event.clientY - box.top + this.scroller.scrollTop + 12}px`;
    this.tooltip.hidden = false;
  }
}
