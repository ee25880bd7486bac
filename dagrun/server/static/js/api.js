// Talking to the dagrun server, polling, and the small DOM and formatting helpers every
// page shares. Elements are built with h()/svg() and text nodes only, never innerHTML,
// so run names, parameters and log lines cannot inject markup.

export const STATES = ["Pending", "Running", "Retrying", "Paused", "Completed", "Cached", "Failed",
  "Crashed", "Cancelled", "NotRun"];  // dagrun.states.StateType
export const ACTIVE_STATES = new Set(["Pending", "Running", "Retrying", "Paused"]);
// Which state a group of task runs shows: trouble first, then work in progress.
export const STATE_PRIORITY = ["Failed", "Crashed", "Running", "Retrying", "Paused", "Pending",
  "Cancelled", "NotRun", "Cached", "Completed"];

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function connection(ok, message) {
  const badge = document.getElementById("connection");
  if (!badge) return;
  badge.textContent = ok ? "live" : "offline";
  badge.classList.toggle("offline", !ok);
  badge.title = message || "Connection to the dagrun server";
}

async function request(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    connection(false, String(error));
    throw new ApiError(0, "The dagrun server cannot be reached");
  }
  connection(true);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || response.statusText);
  }
  return body;
}

export function getJSON(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return request(text ? `${path}?${text}` : path, { headers: { Accept: "application/json" } });
}

export function postJSON(path, body = {}) {
  // X-Dagrun-Request: a cross-site form cannot set it, so it cannot forge this POST.
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Dagrun-Request": "1" },
    body: JSON.stringify(body),
  });
}

// Calls `step` now and then every `interval` ms (slower while the tab is hidden) until
// stop(). `step` may return "again" to be called at once (a page of logs was full) or
// "done" to end the polling. `step(current)` gets a function saying whether this poller
// is still running: a step must check it after each await before it changes the page,
// or an answer to a request made under the old filters lands after the new ones.
export function poll(step, interval) {
  let timer = null;
  let stopped = false;
  async function tick() {
    timer = null;
    if (stopped) return;
    let outcome;
    try {
      outcome = await step(() => !stopped);
    } catch (error) {
      console.warn("poll failed:", error);
    }
    if (stopped || outcome === "done") return;
    const delay = outcome === "again" ? 0 : document.hidden ? interval * 5 : interval;
    timer = setTimeout(tick, delay);
  }
  tick();
  return {
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
    },
  };
}

function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function h(tag, attributes, ...children) {
  return build(document.createElement(tag), attributes, children);
}

export function svg(tag, attributes, ...children) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), attributes, children);
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state);
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

function pad(number) {
  return String(number).padStart(2, "0");
}

export function formatTime(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return "—";
  const d = new Date(epochSeconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatClock(epochSeconds) {
  const d = new Date(epochSeconds * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    String(d.getMilliseconds()).padStart(3, "0");
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${pad(Math.floor(seconds % 60))}s`;
  return `${Math.floor(minutes / 60)}h ${pad(minutes % 60)}m`;
}

export function formatBytes(size) {
  if (size === null || size === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

// How long a run has taken: its recorded duration, or for a run still going, so far.
export function elapsed(run) {
  if (run.duration !== null && run.duration !== undefined) return run.duration;
  if (run.start_time && ACTIVE_STATES.has(run.state)) return Date.now() / 1000 - run.start_time;
  return null;
}

export function formatParameters(parameters) {
  const entries = Object.entries(parameters || {});
  return entries.map(([name, value]) => `${name}=${JSON.stringify(value)}`).join(" ");
}

export function countStates(taskRuns) {
  const counts = {};
  for (const taskRun of taskRuns) counts[taskRun.state] = (counts[taskRun.state] || 0) + 1;
  return counts;
}

export function stateCounts(counts) {
  return h("div", { class: "state-counts" },
    STATES.filter((state) => counts[state]).map((state) =>
      h("span", { class: `count state-${state}`, "data-state": state },
        h("i", { class: "dot" }), `${state} ${counts[state]}`)));
}

export function errorMessage(error) {
  return h("div", { class: "error-box", role: "alert" },
    error && error.status === 404 ? "Not found: " : "", error ? error.message : "Error");
}

export function pageHeader(title, ...extra) {
  return h("div", { class: "page-header" }, h("h1", null, title), ...extra);
}

// The query part of the fragment (#/runs?flow=etl -> flow=etl).
export function currentQuery() {
  const hash = location.hash.replace(/^#/, "");
  return new URLSearchParams(hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "");
}

// Records a page's filters in the fragment without redrawing the page (no hashchange).
export function replaceQuery(values) {
  const hash = location.hash.replace(/^#/, "");
  const path = hash.split("?")[0] || "/runs";
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) if (value) query.set(name, value);
  const text = query.toString();
  history.replaceState(null, "", `#${path}${text ? `?${text}` : ""}`);
}

// The error panel of a failed run: the traceback from the user's code first, and a button
// that switches to the full one (dagrun's and Dask's frames too) when the history has it.
export function errorPanel(error, traceback, fullTraceback) {
  if (!error && !traceback) return null;
  const pre = traceback ? h("pre", { class: "traceback", "data-view": "user" }, traceback) : null;
  let toggle = null;
  if (pre && fullTraceback && fullTraceback !== traceback) {
    toggle = h("button", {
      type: "button", class: "link traceback-toggle", "aria-pressed": "false",
      onclick: () => {
        const full = pre.dataset.view === "user";
        pre.dataset.view = full ? "full" : "user";
        pre.textContent = full ? fullTraceback : traceback;
        toggle.textContent = full ? "Your code only" : "Full traceback";
        toggle.setAttribute("aria-pressed", String(full));
      },
    }, "Full traceback");
  }
  return h("section", { class: "panel error-panel" },
    h("h2", null, "Error"), h("p", { class: "error-text" }, error || ""),
    pre ? h("details", { open: true }, h("summary", null, "Traceback"), toggle, pre) : null);
}
