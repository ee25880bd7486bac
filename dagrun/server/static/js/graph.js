// The dependency graph of a flow run, drawn in SVG from the task runs' upstream ids.
//
// Up to GROUP_THRESHOLD task runs get a node each. Beyond that, task runs are grouped by
// task name into one node with a count per state (a 5,000-task map of one function is one
// node, not 5,000), which keeps layout and rendering to a few hundred elements; a group
// can be expanded into its task runs while the total stays under EXPAND_LIMIT. Layout is
// layered left to right (longest path from the sources), with two barycenter sweeps to
// untangle edges. Live updates only recolour nodes unless the set of nodes changed.

import { STATE_PRIORITY, STATES, h, svg } from "./api.js";

const GROUP_THRESHOLD = 300;
const EXPAND_LIMIT = 600;
const NODE_W = 180;
const NODE_H = 38;
const GAP_X = 70;
const GAP_Y = 14;

function dominantState(counts) {
  return STATE_PRIORITY.find((state) => counts[state]) || "Pending";
}

function buildModel(taskRuns, expanded) {
  const grouped = taskRuns.length > GROUP_THRESHOLD;
  const nodes = new Map();
  const nodeOf = new Map();
  for (const taskRun of taskRuns) {
    const single = !grouped || expanded.has(taskRun.task_name);
    const key = single ? `t:${taskRun.id}` : `g:${taskRun.task_name}`;
    let node = nodes.get(key);
    if (!node) {
      node = { key, group: !single, taskName: taskRun.task_name,
        label: single ? (taskRun.task_run_name || taskRun.task_name) : taskRun.task_name,
        members: [], counts: {} };
      nodes.set(key, node);
    }
    node.members.push(taskRun);
    node.counts[taskRun.state] = (node.counts[taskRun.state] || 0) + 1;
    nodeOf.set(taskRun.id, key);
  }
  const edges = new Map();
  for (const taskRun of taskRuns) {
    const to = nodeOf.get(taskRun.id);
    for (const upstream of taskRun.upstream || []) {
      const from = nodeOf.get(upstream);
      if (from && from !== to) edges.set(`${from}\n${to}`, { from, to });
    }
  }
  for (const node of nodes.values()) node.state = dominantState(node.counts);
  return { grouped, nodes, edges: [...edges.values()],
    structure: `${[...nodes.keys()].join("|")}#${[...edges.keys()].join("|")}` };
}

function layout(model) {
  const keys = [...model.nodes.keys()];
  const index = new Map(keys.map((key, i) => [key, i]));
  const predecessors = keys.map(() => []);
  const successors = keys.map(() => []);
  for (const edge of model.edges) {
    predecessors[index.get(edge.to)].push(index.get(edge.from));
    successors[index.get(edge.from)].push(index.get(edge.to));
  }
  // Kahn's order; each node one layer right of its furthest predecessor.
  const layer = keys.map(() => 0);
  const remaining = predecessors.map((list) => list.length);
  const queue = keys.map((_, i) => i).filter((i) => remaining[i] === 0);
  for (let head = 0; head < queue.length; head += 1) {
    const node = queue[head];
    for (const next of successors[node]) {
      layer[next] = Math.max(layer[next], layer[node] + 1);
      remaining[next] -= 1;
      if (remaining[next] === 0) queue.push(next);
    }
  }
  const layers = [];
  keys.forEach((_, i) => (layers[layer[i]] ||= []).push(i));
  for (let i = 0; i < layers.length; i += 1) layers[i] ||= [];
  const position = new Array(keys.length).fill(0);
  const place = () => layers.forEach((nodes) => nodes.forEach((node, i) => { position[node] = i; }));
  place();
  const sweep = (range, neighbours) => {
    for (const i of range) {
      const weight = new Map(layers[i].map((node) => {
        const around = neighbours[node];
        return [node, around.length
          ? around.reduce((sum, other) => sum + position[other], 0) / around.length
          : position[node]];
      }));
      layers[i].sort((a, b) => weight.get(a) - weight.get(b));
      layers[i].forEach((node, j) => { position[node] = j; });
    }
  };
  const forward = layers.map((_, i) => i).slice(1);
  for (let round = 0; round < 2; round += 1) {
    sweep(forward, predecessors);
    sweep([...forward].reverse().map((i) => i - 1), successors);
  }
  const tallest = Math.max(1, ...layers.map((nodes) => nodes.length));
  for (let l = 0; l < layers.length; l += 1) {
    const offset = ((tallest - layers[l].length) * (NODE_H + GAP_Y)) / 2;
    layers[l].forEach((node, j) => {
      const item = model.nodes.get(keys[node]);
      item.x = l * (NODE_W + GAP_X);
      item.y = offset + j * (NODE_H + GAP_Y);
    });
  }
  model.width = layers.length * (NODE_W + GAP_X) - GAP_X;
  model.height = tallest * (NODE_H + GAP_Y) - GAP_Y;
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function subtitle(node) {
  if (!node.group) return node.state;
  return `×${node.members.length} · ${STATES.filter((s) => node.counts[s])
    .map((s) => `${node.counts[s]} ${s}`).join(", ")}`;
}

export class DependencyGraph {
  constructor(container, { onOpenTaskRun, onOpenGroup }) {
    this.onOpenTaskRun = onOpenTaskRun;
    this.onOpenGroup = onOpenGroup;
    this.expanded = new Set();
    this.view = { scale: 1, x: 20, y: 20 };
    this.structure = null;
    this.note = h("span", { class: "muted" });
    this.collapse = h("button", { type: "button", hidden: true,
      onclick: () => { this.expanded.clear(); this.redraw(); } }, "Collapse groups");
    this.viewport = svg("g", { class: "viewport" });
    this.svg = svg("svg", { class: "graph-svg", role: "img", "aria-label": "Dependency graph" },
      svg("defs", null, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))),
      this.viewport);
    container.append(
      h("div", { class: "toolbar" },
        h("button", { type: "button", onclick: () => this.fit() }, "Fit"),
        h("button", { type: "button", "aria-label": "Zoom in", onclick: () => this.zoomBy(1.25) }, "+"),
        h("button", { type: "button", "aria-label": "Zoom out", onclick: () => this.zoomBy(0.8) }, "−"),
        this.collapse, this.note),
      this.svg);
    this.bindPanZoom();
  }

  update(taskRuns) {
    this.taskRuns = taskRuns;
    const model = buildModel(taskRuns, this.expanded);
    if (model.structure === this.structure) {
      for (const node of model.nodes.values()) this.recolour(node);
      this.model = model;
      return;
    }
    this.redraw(model);
  }

  redraw(model = buildModel(this.taskRuns, this.expanded)) {
    const first = this.structure === null;
    this.model = model;
    this.structure = model.structure;
    layout(model);
    const edges = model.edges.map((edge) => {
      const a = model.nodes.get(edge.from);
      const b = model.nodes.get(edge.to);
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x - 2;
      const y2 = b.y + NODE_H / 2;
      const middle = (x1 + x2) / 2;
      return svg("path", { class: "edge", "marker-end": "url(#arrow)",
        d: `M${x1},${y1} C${middle},${y1} ${middle},${y2} ${x2},${y2}` });
    });
    this.elements = new Map();
    const nodes = [...model.nodes.values()].map((node) => this.drawNode(node));
    this.viewport.replaceChildren(svg("g", { class: "edges" }, edges), svg("g", { class: "nodes" }, nodes));
    const count = this.taskRuns.length;
    this.note.textContent = model.grouped
      ? `${count} task runs grouped by task into ${model.nodes.size} nodes; click a group to expand it`
      : `${count} task run${count === 1 ? "" : "s"}`;
    this.collapse.hidden = this.expanded.size === 0;
    if (first) this.fit();
    this.svg.dataset.rendered = String(model.nodes.size);
  }

  drawNode(node) {
    const bar = svg("g", { class: "bar" });
    const sub = svg("text", { class: "sub", x: 10, y: 30 });
    const title = svg("title");
    const element = svg("g", { class: `node${node.group ? " group" : ""}`, tabindex: 0,
      transform: `translate(${node.x},${node.y})`, "data-key": node.key,
      "data-task-name": node.taskName, "data-state": node.state },
    title,
    svg("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 6 }),
    svg("text", { class: "label", x: 10, y: 15 }, clip(node.label, 24)),
    sub, bar);
    if (!node.group) element.dataset.taskRunId = node.members[0].id;
    element.addEventListener("click", () => { if (!this.dragged) this.open(node.key); });
    element.addEventListener("keydown", (event) => { if (event.key === "Enter") this.open(node.key); });
    this.elements.set(node.key, { element, sub, bar, title });
    this.recolour(node);
    return element;
  }

  recolour(node) {
    const parts = this.elements.get(node.key);
    if (!parts) return;
    parts.element.dataset.state = node.state;
    parts.sub.textContent = clip(subtitle(node), 30);
    parts.title.textContent = `${node.label}\n${subtitle(node)}`;
    if (!node.group) return;
    // A stacked bar of the group's states along the bottom edge of the box.
    let x = 0;
    parts.bar.replaceChildren(...STATES.filter((s) => node.counts[s]).map((state) => {
      const width = (node.counts[state] / node.members.length) * (NODE_W - 2);
      const segment = svg("rect", { class: `segment state-${state}`, x: 1 + x, y: NODE_H - 5,
        width: Math.max(width, 1), height: 4 });
      x += width;
      return segment;
    }));
  }

  open(key) {
    const node = this.model.nodes.get(key);
    if (!node) return;
    if (!node.group) {
      this.onOpenTaskRun(node.members[0].id);
      return;
    }
    const canExpand = this.model.nodes.size - 1 + node.members.length <= EXPAND_LIMIT;
    this.onOpenGroup(node, canExpand ? () => {
      this.expanded.add(node.taskName);
      this.redraw();
    } : null);
  }

  apply() {
    const { scale, x, y } = this.view;
    this.viewport.setAttribute("transform", `translate(${x},${y}) scale(${scale})`);
  }

  fit() {
    const box = this.svg.getBoundingClientRect();
    const width = box.width || 800;
    const height = box.height || 400;
    const scale = Math.min(1.2, (width - 40) / Math.max(this.model.width, 1),
      (height - 40) / Math.max(this.model.height, 1));
    this.view = { scale: Math.max(scale, 0.05),
      x: (width - this.model.width * scale) / 2, y: (height - this.model.height * scale) / 2 };
    this.apply();
  }

  zoomBy(factor, cx, cy) {
    const box = this.svg.getBoundingClientRect();
    const px = cx ?? box.width / 2;
    const py = cy ?? box.height / 2;
    const scale = Math.min(4, Math.max(0.05, this.view.scale * factor));
    const ratio = scale / this.view.scale;
    // Keep the point under the cursor where it is.
    this.view = { scale, x: px - (px - this.view.x) * ratio, y: py - (py - this.view.y) * ratio };
    this.apply();
  }

  bindPanZoom() {
    this.svg.addEventListener("wheel", (event) => {
      event.preventDefault();
      const box = this.svg.getBoundingClientRect();
      this.zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
    }, { passive: false });
    let start = null;
    this.svg.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      start = { x: event.clientX, y: event.clientY, view: { ...this.view } };
      this.dragged = false;
    });
    this.onPointerMove = (event) => {
      if (!start) return;
      const dx = event.clientX - start.x;
      const dy = event.clientY - start.y;
      // A few pixels of jitter is still a click on a node, not a pan.
      if (!this.dragged && Math.hypot(dx, dy) < 4) return;
      this.dragged = true;
      this.svg.classList.add("panning");
      this.view = { ...start.view, x: start.view.x + dx, y: start.view.y + dy };
      this.apply();
    };
    this.onPointerUp = () => {
      start = null;
      this.svg.classList.remove("panning");
      // Let the click that ends a drag see `dragged`, then forget it.
      setTimeout(() => { this.dragged = false; }, 0);
    };
    // On window, so a drag that leaves the drawing still ends.
    window.addEventListener("pointermove", this.onPointerMove);
    window.addEventListener("pointerup", this.onPointerUp);
  }

  destroy() {
    window.removeEventListener("pointermove", this.onPointerMove);
    window.removeEventListener("pointerup", this.onPointerUp);
  }
}
