// The router: the URL fragment names the page (#/runs, #/runs/ID, #/runs/ID/logs,
// #/task-runs/ID, #/flows). Each page function draws into <main> and returns a function
// that stops its polling, called before the next page is drawn.

import { currentQuery, errorMessage } from "./api.js";
import { deploymentsPage } from "./deployments.js";
import { flowsPage } from "./flows.js";
import { logsPage } from "./logs.js";
import { runPage } from "./run.js";
import { runsPage } from "./runs.js";
import { taskRunPage } from "./task_run.js";

const ROUTES = [
  [/^\/runs\/([^/]+)\/logs$/, logsPage, "runs"],
  [/^\/runs\/([^/]+)$/, runPage, "runs"],
  [/^\/task-runs\/([^/]+)$/, taskRunPage, "runs"],
  [/^\/flows$/, flowsPage, "flows"],
  [/^\/deployments$/, deploymentsPage, "deployments"],
  [/^\/runs$/, runsPage, "runs"],
];

let dispose = null;

function route() {
  if (dispose) dispose();
  dispose = null;
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path] = hash.split("?");
  const view = document.getElementById("view");
  view.replaceChildren();
  window.scrollTo(0, 0);
  for (const [pattern, page, nav] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.dataset.nav === nav);
    }
    try {
      dispose = page(view, match.slice(1).map(decodeURIComponent), currentQuery()) || null;
    } catch (error) {
      view.append(errorMessage(error));
    }
    return;
  }
  view.append(errorMessage(new Error(`No page at #${path}`)));
}

window.addEventListener("hashchange", route);
route();
