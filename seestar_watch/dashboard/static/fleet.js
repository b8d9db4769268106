// seestar-watch fleet page: one row and one column per telescope, side by side. Each column
// is that telescope's own page (scope/NAME/), which draws its light curves itself.
// Names and values come from the ledgers and the share: untrusted, only ever set as text.
"use strict";

const EVERY = 5000;  // ms between polls of the summary
const built = new Map();  // scope -> its summary row

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function build(scopes) {
  const frames = document.getElementById("fleet");
  const body = document.querySelector("#fleet-summary tbody");
  for (const scope of scopes) {
    if (built.has(scope)) continue;
    const row = document.createElement("tr");
    row.dataset.scope = scope;
    body.append(row);
    built.set(scope, row);
    const column = document.createElement("div");
    column.className = "scope-column";
    const title = document.createElement("h2");
    const link = document.createElement("a");
    link.href = `scope/${encodeURIComponent(scope)}/`;
    link.textContent = scope;
    title.append(link);
    const page = document.createElement("iframe");
    page.src = link.href;
    page.title = `${scope}: its own page`;
    column.append(title, page);
    frames.append(column);
  }
  document.getElementById("fleet-size").textContent = `${scopes.length} telescopes`;
}

function summarize(scope, status) {
  const daemon = status.daemon || {};
  const share = daemon.running === false ? "daemon not running" : daemon.share || "checking";
  const last = status.last_frame;
  const name = last ? String(last.source).split("/").pop() : "none yet";
  const row = built.get(scope);
  const link = document.createElement("a");
  link.href = `scope/${encodeURIComponent(scope)}/`;
  link.textContent = scope;
  const first = document.createElement("td");
  first.append(link);
  row.replaceChildren(first, cell(share, `share ${daemon.share || ""}`), cell(status.pending),
    cell(status.counts.done, "state-done"), cell(status.counts.failed, "state-failed"),
    cell(last ? `${name}: ${last.state}` : name, "name"));
}

async function refresh() {  // one poll (poll.js)
  const { scopes } = await getJSON("api/fleet");
  build(scopes);
  for (const scope of scopes) {
    summarize(scope, await getJSON(`scope/${encodeURIComponent(scope)}/api/status`));
  }
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.loaded = "true";
}

poll(refresh, EVERY);
