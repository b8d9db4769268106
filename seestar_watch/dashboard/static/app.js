// seestar-watch dashboard: polls the JSON API and draws the night, with no library.
// Everything from the share (names, header and result values) is untrusted: it only ever
// goes into the page as text (textContent, text nodes, SVG attributes), never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STATES = ["done", "failed", "rejected", "running", "skipped"];
const COLOURS = ["#5b9bd5", "#e8a33d", "#4caf7d", "#d96bb0", "#a67ad9", "#e0564b", "#52c0c0",
  "#c9c95b", "#8d9be8", "#b98a5e"];
const params = new URLSearchParams(location.search);
const MAX_CHARTS = 16;
const EVERY = Math.max(1, Number(params.get("refresh")) || 5) * 1000;  // ms between polls
// ?days=30: the light curves reach back that far (the other charts keep to the night)
const DAYS = Math.max(0, Number(params.get("days")) || 0);
// drawn as light curves, or the time itself: not charts of their own
const PHOTOMETRY = new Set(["mag", "mag_err", "check_mag", "check_err", "check_inst_mag",
  "check_ref_mag", "jd", "hjd", "bjd_tdb", "x", "y"]);
const JD_UNIX = 2440587.5;  // the Julian date of 1970-01-01T00:00Z

const night = { start: null, cursor: null, frames: new Map(), changed: false };
const colourOf = new Map();

function node(tag, className, ...children) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  for (const child of children) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function clock(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function when(iso) {  // with the date: the hover read-out, a span of more than a day
  if (!iso) return "–";
  return new Date(iso).toLocaleString([], { year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// the night a frame was taken in: from the noon (local) before its observation time, on the
// same clock as the charts' axis (the processing time can be a year later, or the scope's
// clock off)
function nightOf(t) {
  const noon = new Date(t);
  noon.setHours(12, 0, 0, 0);
  if (noon.getTime() > t) noon.setDate(noon.getDate() - 1);
  return noon.getTime();
}

function nameOf(source) {
  return source.split("/").pop();
}

function shown(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toPrecision(4);
  return String(value);
}

function target(frame) {
  return frame.OBJECT === null || frame.OBJECT === undefined ? "?" : String(frame.OBJECT).trim();
}

// -- polling ---------------------------------------------------------------------------

async function refresh() {  // one poll (poll.js): the status, and the frames changed since
  const status = await getJSON("api/status");
  if (night.start !== status.night_start) {  // a new night: start the charts afresh
    night.start = status.night_start;
    const since = DAYS ? Math.min(status.night_start, status.now - DAYS * 86400) : status.night_start;
    night.cursor = { since, after: 0 };
    night.frames.clear();
    night.changed = true;
  }
  for (let more = true; more;) {
    const page = await getJSON(
      `api/frames?since=${night.cursor.since}&after=${night.cursor.after}`);
    for (const frame of page.frames) night.frames.set(frame.id, frame);
    night.changed = night.changed || page.frames.length > 0;
    night.cursor = page.next;
    more = page.more;
  }
  showStatus(status);
  if (night.changed) {
    showLightCurves(status.periods || []);
    showCharts(status.useful_fields);
  }
  night.changed = false;
  if (!document.body.dataset.loaded) {  // how long the first full load took (benchmarks)
    document.body.dataset.loadedMs = Math.round(performance.now());
  }
  document.body.dataset.loaded = "true";
}

// -- status, counts, failures, recent frames ---------------------------------------------

function showStatus(status) {
  const daemon = status.daemon || {};
  document.getElementById("watch-path").textContent = daemon.watch_path || status.ledger;
  const share = document.getElementById("share");
  const word = { up: "share up", down: "share down", waiting: "waiting for the share" };
  share.textContent = daemon.running === false ? "daemon not running"
    : word[daemon.share] || "share: checking";
  share.className = `pill ${daemon.running === false ? "" : daemon.share || ""}`;
  share.title = daemon.reason || "";
  document.getElementById("observer").textContent =
    daemon.observer && daemon.running !== false ? `observer: ${daemon.observer}` : "";
  document.getElementById("updated").textContent =
    `updated ${new Date(status.now * 1000).toLocaleTimeString()}`;
  document.getElementById("pending").textContent = status.pending;
  const archive = status.archive;
  document.getElementById("archive").textContent = archive
    ? `archive: ${(archive.bytes / 1e9).toFixed(2)} GB in ${archive.copies} copies`
    : "";

  const counts = document.getElementById("counts");
  counts.replaceChildren(...STATES.map((state) => {
    const card = node("div", "card", node("div", "label", state),
      node("div", `value state-${state}`, status.counts[state]));
    card.dataset.state = state;
    return card;
  }));

  const last = status.last_frame;
  document.getElementById("last-frame").textContent =
    last ? `${nameOf(last.source)} (${target(last)}): ${last.state}` : "none yet";
  document.getElementById("last-frame-when").textContent = last ? clock(last.updated_at) : "";

  showFailures(status.failures);
  showRecent(status.frames, status.useful_fields);
}

function showFailures(failures) {
  const body = document.querySelector("#failures tbody");
  body.replaceChildren(...failures.map((frame) => node("tr", "",
    node("td", "", clock(frame.updated_at)), node("td", "name", nameOf(frame.source)),
    node("td", `state-${frame.state}`, frame.state === "failed" ? "failed" : "to retry"),
    node("td", "", frame.attempts), node("td", "", shown(frame.exit_code)),
    node("td", "name", frame.reason || ""))));
  document.getElementById("no-failures").hidden = failures.length > 0;
}

function resultFields(frames, useful) {
  const seen = new Set();
  for (const frame of frames) for (const key of Object.keys(frame.result || {})) seen.add(key);
  const first = useful.filter((key) => seen.has(key));
  return first.concat([...seen].filter((key) => !first.includes(key))).slice(0, 6);
}

function showRecent(frames, useful) {
  const fields = resultFields(frames, useful);
  const head = document.querySelector("#recent thead tr");
  head.replaceChildren(...["taken", "target", "state", "tries", "exit", ...fields, "frame"]
    .map((title) => node("th", "", title)));
  const body = document.querySelector("#recent tbody");
  body.replaceChildren(...frames.map((frame) => {
    const result = frame.result || {};
    const taken = node("td", "", clock(frame.observed_at));  // when the frame was taken
    taken.title = `${when(frame.observed_at)}; last change ${when(frame.updated_at)}`;
    const row = node("tr", "",
      taken, node("td", "", target(frame)),
      node("td", `state-${frame.state}`, frame.state), node("td", "", frame.attempts),
      node("td", "", shown(frame.exit_code)),
      ...fields.map((key) => node("td", "", shown(result[key]))),
      node("td", "name", nameOf(frame.source)));
    row.dataset.id = frame.id;
    return row;
  }));
}

// -- charts: every numeric result field against DATE-OBS, one series per target -----------

function showCharts(useful) {
  const points = new Map();  // field -> [{t, y, target, frame}]
  const done = [...night.frames.values()].filter((frame) => frame.state === "done" && frame.result);
  // the latest night the frames were taken in, on the axis' own clock
  const start = nightOf(Math.max(...done.map((frame) => Date.parse(frame.observed_at))));
  const end = start + 86400000;
  for (const frame of done) {
    const t = Date.parse(frame.observed_at);
    if (!(t >= start && t < end)) continue;
    for (const [key, value] of Object.entries(frame.result)) {
      if (typeof value !== "number" || !Number.isFinite(value) || isPhotometry(frame, key)) continue;
      if (!points.has(key)) points.set(key, []);
      points.get(key).push({ t, y: value, target: target(frame), frame });
    }
  }
  if (points.has("fwhm_arcsec")) points.delete("fwhm_px");  // one quantity, one chart
  const all = [...useful.filter((key) => points.has(key)),
    ...[...points.keys()].filter((key) => !useful.includes(key)).sort()];
  const fields = all.slice(0, MAX_CHARTS);  // a result may hold thousands of keys
  const targets = [...new Set([...points.values()].flat().map((p) => p.target))].sort();
  targets.forEach((name) => {
    if (!colourOf.has(name)) colourOf.set(name, COLOURS[colourOf.size % COLOURS.length]);
  });
  const legend = document.getElementById("legend");
  legend.replaceChildren(...targets.map((name) => {
    const entry = node("span", "", name);
    entry.style.setProperty("--swatch", colourOf.get(name));
    return entry;
  }));
  document.getElementById("night").textContent = done.length
    ? `taken since ${when(new Date(start).toISOString())}` : "";
  const charts = document.getElementById("charts");
  charts.replaceChildren(...fields.map((field) => chart(field, points.get(field))));
  if (all.length > fields.length) {
    charts.append(node("p", "muted", `and ${all.length - fields.length} more numeric fields:`
      + " seestar-watch export has them all."));
  }
  if (!fields.length) charts.append(node("p", "muted", "No results yet: a pipeline that"
    + " writes $SEESTAR_WATCH_RESULT (quicklook does) fills these charts."));
}

function isPhotometry(frame, key) {  // the photometry stage's result: its own light curve
  return PHOTOMETRY.has(key) && "target" in frame.result && "mag" in frame.result;
}

function chart(field, points) {
  const W = 460, H = 190, L = 64, R = 10, T = 8, B = 24;
  const ts = points.map((p) => p.t), ys = points.map((p) => p.y);
  let [t0, t1] = [Math.min(...ts), Math.max(...ts)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (t1 === t0) { t0 -= 60000; t1 += 60000; }
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.05 || 1;
  const positive = y0 >= 0;  // SNR, stars, FWHM: the axis does not go below 0
  y0 = positive ? Math.max(0, y0 - pad) : y0 - pad; y1 += pad;
  const brighterUp = /mag/i.test(field);  // magnitudes: brighter (smaller) is higher
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = (v) => brighterUp ? T + (v - y0) / (y1 - y0) * (H - T - B)
    : H - B - (v - y0) / (y1 - y0) * (H - T - B);

  const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${field} over the night`, "data-field": field });
  drawing.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  drawing.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  // enough decimals to tell the ticks apart (a magnitude range of 0.01 needs three)
  const digits = Math.min(4, Math.max(0, Math.ceil(-Math.log10((y1 - y0) / 3)) + 1));
  const format = { hour: "2-digit", minute: "2-digit" };  // with seconds for a short span
  if (t1 - t0 < 15 * 60000) format.second = "2-digit";
  if (t1 - t0 > 86400000) Object.assign(format, { month: "short", day: "numeric" });
  for (let i = 0; i <= 3; i++) {
    const v = y0 + (y1 - y0) * i / 3;
    drawing.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(digits)));
    const t = t0 + (t1 - t0) * i / 3;
    drawing.append(svg("text", { x: x(t), y: H - 6, "text-anchor": ["start", "middle", "middle", "end"][i] },
      new Date(t).toLocaleString([], format)));
  }
  const byTarget = new Map();
  for (const p of points) {
    if (!byTarget.has(p.target)) byTarget.set(p.target, []);
    byTarget.get(p.target).push(p);
  }
  // One line and one path of dots per target, not an element per point: a night of
  // 3,000 frames and 7 fields would otherwise be 20,000 elements to build every time.
  for (const [name, series] of byTarget) {
    const colour = colourOf.get(name);
    series.sort((a, b) => a.t - b.t);
    const xy = series.map((p) => [x(p.t).toFixed(1), y(p.y).toFixed(1)]);
    drawing.append(svg("polyline", { stroke: colour, points: xy.map((c) => c.join(",")).join(" ") }));
    drawing.append(svg("path", { class: "points", stroke: colour, "data-target": name,
      "data-points": series.length, d: xy.map(([px, py]) => `M${px} ${py}h0`).join("") }));
  }
  // hovering shows the nearest frame: its target, date and time, value and name, in a
  // line of its own under the chart (not over the plot's top label)
  const readout = node("div", "readout muted", " ");
  const byTime = [...points].sort((a, b) => a.t - b.t);
  drawing.addEventListener("mousemove", (event) => {
    const box = drawing.getBoundingClientRect();
    const t = t0 + ((event.clientX - box.left) / box.width * W - L) / (W - L - R) * (t1 - t0);
    let lo = 0, hi = byTime.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (byTime[mid].t < t) lo = mid + 1; else hi = mid; }
    const near = lo > 0 && Math.abs(byTime[lo - 1].t - t) < Math.abs(byTime[lo].t - t) ? byTime[lo - 1] : byTime[lo];
    readout.textContent = `${near.target} ${when(near.frame.observed_at)}: ${shown(near.y)}`
      + ` (${nameOf(near.frame.source)})`;
  });
  drawing.addEventListener("mouseleave", () => { readout.textContent = " "; });
  const box = node("div", "chart", node("h3", "", field));
  box.append(drawing, readout);
  return box;
}

// -- light curves: the photometry stage's magnitudes, one panel set per target ------------
//
// A result of the stage has `target` and `mag` (null when the frame has no magnitude, with
// its `reason`). Time is the mid-exposure JD; brighter is up; every point has its error bar.

function showLightCurves(periods) {
  const curves = new Map();  // target -> {points, check, left, checkName}
  for (const frame of night.frames.values()) {
    const r = frame.result;
    if (frame.state !== "done" || !r || !("mag" in r) || typeof r.target !== "string") continue;
    const t = Number.isFinite(r.jd) ? (r.jd - JD_UNIX) * 86400000 : Date.parse(frame.observed_at);
    if (!Number.isFinite(t)) continue;
    if (!curves.has(r.target)) curves.set(r.target, { points: [], check: [], left: [], checks: new Set() });
    const curve = curves.get(r.target);
    if (Number.isFinite(r.mag)) {
      curve.points.push({ t, jd: r.jd, y: r.mag, err: finite(r.mag_err), frame });
    } else {
      curve.left.push({ t, reason: String(r.reason || "no magnitude"), frame });
    }
    if (Number.isFinite(r.check_mag)) {
      curve.check.push({ t, jd: r.jd, y: r.check_mag, err: finite(r.check_err), frame });
      curve.checks.add(String(r.check_name));
    }
  }
  const section = document.getElementById("photometry");
  section.hidden = curves.size === 0;
  const folds = new Map(periods.map((p) => [p.name, p]));
  document.getElementById("light-curves").replaceChildren(...[...curves.keys()].sort()
    .map((name) => lightCurve(name, curves.get(name), folds.get(name))));
}

function finite(value) {  // an error the result does not give stays unknown, never 0
  return Number.isFinite(value) ? value : null;
}

function lightCurve(name, curve, fold) {
  const box = node("div", "chart light-curve", node("h3", "", name));
  box.dataset.target = name;
  const readout = node("div", "readout muted", " ");
  const times = [...curve.points, ...curve.check, ...curve.left].map((p) => p.t);
  const span = [Math.min(...times), Math.max(...times)];
  if (!colourOf.has(name)) colourOf.set(name, COLOURS[colourOf.size % COLOURS.length]);
  const colour = colourOf.get(name);
  box.append(panel({ title: `${name} TG`, points: curve.points, left: curve.left, span,
    axis: timeAxis, readout, kind: "target", colour }));
  if (curve.check.length) {
    box.append(panel({ title: `check ${[...curve.checks].join(", ")}`, points: curve.check,
      left: [], span, axis: timeAxis, readout, kind: "check", colour: "#8a8f98" }));
  }
  if (fold && curve.points.length) {
    const epoch = Number.isFinite(fold.epoch) ? fold.epoch : 0;
    const phased = curve.points.filter((p) => Number.isFinite(p.jd)).map((p) => (
      { ...p, t: (((p.jd - epoch) / fold.period) % 1 + 1) % 1 }));
    box.append(panel({ title: `${name} TG, phase (P = ${fold.period} d)`, points: phased,
      left: [], span: [0, 1], axis: phaseAxis, readout, kind: "phase", colour }));
  }
  const reasons = new Map();
  for (const p of curve.left) reasons.set(p.reason, (reasons.get(p.reason) || 0) + 1);
  const summary = node("div", "left-out-summary muted", curve.left.length
    ? `left out: ${[...reasons].map(([why, n]) => `${n} ${why}`).join("; ")}` : "");
  box.append(readout, summary);
  return box;
}

function timeAxis(t0, t1) {
  const format = { hour: "2-digit", minute: "2-digit" };
  const dated = t1 - t0 > 86400000;  // a span of more than a day: the date on every tick
  if (dated) Object.assign(format, { month: "short", day: "numeric" });
  return Object.assign((t) => new Date(t).toLocaleString([], format), { wide: dated });
}

function phaseAxis() {
  return (phase) => phase.toFixed(2);
}

// One panel: magnitudes (brighter up) with error bars against time or phase, and the
// frames left out as marks along the bottom. Points, bars and marks are a path each.
function panel({ title, points, left, span, axis, readout, kind, colour }) {
  const W = 460, H = 170, L = 58, R = 10, T = 18, B = 22;
  let [t0, t1] = span;
  if (t1 === t0) { t0 -= 60000; t1 += 60000; }
  const lows = points.map((p) => p.y - (p.err ?? 0)), highs = points.map((p) => p.y + (p.err ?? 0));
  let [y0, y1] = points.length ? [Math.min(...lows), Math.max(...highs)] : [0, 1];
  const pad = (y1 - y0) * 0.08 || 0.05;
  y0 -= pad; y1 += pad;
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = (v) => T + (v - y0) / (y1 - y0) * (H - T - B);  // brighter (smaller) is up
  const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-kind": kind,
    "aria-label": `${title}: magnitude against ${kind === "phase" ? "phase" : "time"}` });
  drawing.append(svg("text", { x: L, y: 12 }, title));
  drawing.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  drawing.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  const label = axis(t0, t1);
  const digits = Math.min(4, Math.max(1, Math.ceil(-Math.log10((y1 - y0) / 3)) + 1));
  for (let i = 0; i <= 3; i++) {
    const v = y0 + (y1 - y0) * i / 3;
    drawing.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "mag-tick" },
      v.toFixed(digits)));
  }
  const ticks = label.wide ? 2 : 3;  // a date and a time are too wide for four
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + (t1 - t0) * i / ticks;
    const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
    drawing.append(svg("text", { x: x(t), y: H - 6, class: "time-tick", "text-anchor": anchor },
      label(t)));
  }
  const px = (p) => x(p.t).toFixed(1);
  drawing.append(svg("path", { class: "errors", stroke: colour,  // no error given: no bar
    d: points.filter((p) => p.err !== null).map((p) =>
      `M${px(p)} ${y(p.y - p.err).toFixed(1)}V${y(p.y + p.err).toFixed(1)}`).join("") }));
  drawing.append(svg("path", { class: "points", stroke: colour, "data-points": points.length,
    d: points.map((p) => `M${px(p)} ${y(p.y).toFixed(1)}h0`).join("") }));
  drawing.append(svg("path", { class: "left-out", "data-left-out": left.length,
    d: left.map((p) => `M${x(p.t).toFixed(1)} ${H - B - 8}v6`).join("") }));
  const all = [...points, ...left].sort((a, b) => a.t - b.t);
  drawing.addEventListener("mousemove", (event) => {
    if (!all.length) return;
    const box = drawing.getBoundingClientRect();
    const t = t0 + ((event.clientX - box.left) / box.width * W - L) / (W - L - R) * (t1 - t0);
    const near = all.reduce((a, b) => (Math.abs(b.t - t) < Math.abs(a.t - t) ? b : a));
    const what = "reason" in near ? `left out: ${near.reason}`
      : `${near.y.toFixed(3)} ± ${near.err === null ? "?" : near.err.toFixed(3)}`;
    readout.textContent = `${when(near.frame.observed_at)}: ${what} (${nameOf(near.frame.source)})`;
  });
  drawing.addEventListener("mouseleave", () => { readout.textContent = " "; });
  return drawing;
}

poll(refresh, EVERY);
