// Logs: a live tail of the gateway's own log lines through logs.tail (polled with its
// cursor once a second while on screen), filtered by level and text.

import { $, el, setAlert, shownName } from "./dom.js";

const POLL_MS = 1000;
const KEEP = 2000; // lines kept in the page; older ones scroll away
const RANK = { debug: 10, info: 20, warning: 30, warn: 30, error: 40, critical: 50 };
let ctx;
let cursor = null;
let logId = null; // the log `cursor` is a place in: a restarted gateway's log is another
let timer = null;
let paused = false;
let polling = false;
const lines = [];
let drawn = null; // the filter the lines on the page were drawn with

export function init(context) {
  ctx = context;
  $("logs-level").addEventListener("change", render);
  $("logs-filter").addEventListener("input", render);
  // The label says what a press does; no aria-pressed besides, or "Resume" is read out as
  // "Resume, pressed".
  $("logs-pause").addEventListener("click", () => {
    paused = !paused;
    $("logs-pause").textContent = paused ? "Resume" : "Pause";
  });
  $("logs-clear").addEventListener("click", () => {
    lines.length = 0;
    render();
  });
}

export async function show() {
  clearInterval(timer);
  timer = setInterval(poll, POLL_MS);
  await poll();
}

export function hide() {
  clearInterval(timer);
  timer = null;
}

async function poll() {
  // One poll at a time: another, sent before this one's answer, would carry the same cursor
  // and add the same lines again (a busy gateway or a slow link takes longer than POLL_MS).
  if (paused || polling) return;
  polling = true;
  let answer;
  try {
    // The cursor alone can end a line of a restarted gateway's log too (each counts its bytes
    // from 0): with the log's id the gateway tells a restart from newer lines.
    answer = await ctx.gw.request("logs.tail", cursor === null ? { limit: 500 } : { cursor, logId, limit: 500 }, { poll: true });
  } catch (error) {
    // Shown until a poll is answered again; the same error each second is not read out again.
    setAlert($("logs-error"), error.message);
    return;
  } finally {
    polling = false;
  }
  setAlert($("logs-error"), "");
  const asked = cursor;
  cursor = answer.cursor;
  logId = typeof answer.logId === "string" ? answer.logId : null;
  if (!answer.lines.length && !answer.reset && drawn) return;
  const added = answer.lines.map(parse);
  // `reset`: the cursor is not this log's (the gateway restarted, and its log starts again)
  // or the lines after it are gone (the view was away longer than the gateway keeps them).
  // The lines shown stay, those before a restart say why it went away; where lines may be
  // missing is marked.
  if (answer.reset && asked !== null) added.unshift(gap("Lines may be missing here: the gateway restarted, or logged more than it keeps since the last read."));
  // `truncated`: more was logged since the last read than one read takes (a pause, a burst);
  // the newest came, the others are left out. Not on the first read, which asks for the newest.
  else if (answer.truncated && asked !== null) added.unshift(gap("Lines are missing here: the gateway logged more since the last read than one read takes."));
  lines.push(...added);
  const dropped = lines.length > KEEP ? lines.splice(0, lines.length - KEEP) : [];
  update(added, dropped);
}

// JSON lines (not a terminal) or the console renderer's `[level ]` form, which on a terminal
// is coloured: its escape sequences (`ESC[31m`) are dropped, as text they are noise and
// `[0m]` read as the level.
const ESCAPES = /\x1b\[[0-9;]*[A-Za-z]/g;

// A line names what clients chose (a path, a client's name): a bidi override in it would draw
// the rest of the line backwards, so such controls are shown as their code points.
function parse(line) {
  const raw = line.replace(ESCAPES, "");
  try {
    const entry = JSON.parse(raw);
    if (entry && typeof entry === "object") {
      // `time` and `message` repeat `ts` and the event with its fields, for OpenClaw's CLI.
      const { event, level, ts, timestamp, time, message, ...rest } = entry;
      const fields = Object.entries(rest).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
      return shown(String(level || "info").toLowerCase(), shownName(ts || timestamp || ""), shownName(event || ""), shownName(fields.join(" ")));
    }
  } catch {
    // not JSON
  }
  const match = /\[\s*(\w+)\s*\]/.exec(raw);
  return shown(match ? match[1].toLowerCase() : "info", "", "", shownName(raw));
}

// A line as the page shows it; the filter matches this text (`text`), the one the user reads,
// not the raw line (a JSON object, a bidi control where "⟨U+202E⟩" is shown). Its node is
// made when first shown and kept with it.
function shown(level, ts, event, rest) {
  const time = ts.replace("T", " ").replace(/\.\d+Z?$/, "");
  return { level, time, event, rest, text: [time, level, event, rest].join(" ").toLowerCase(), node: null };
}

// A line of the page's own between two of the log's: where some may be missing. Shown
// whatever the filter.
function gap(text) {
  return { gap: true, level: "", text: "", node: el("div", { class: "log-gap", text }) };
}

function filter() {
  return { min: RANK[$("logs-level").value] || 0, needle: $("logs-filter").value.trim().toLowerCase() };
}

function matches(line, { min, needle }) {
  if (line.gap) return true;
  return (RANK[line.level] || 20) >= min && (!needle || line.text.includes(needle));
}

function nodeOf(l) {
  l.node ??= el("div", { class: `log-line level-${l.level}` }, el("span", { class: "log-time", text: l.time }), el("span", { class: "log-level", text: l.level }), el("span", { class: "log-event", text: l.event }), el("span", { class: "log-rest", text: l.rest }));
  return l.node;
}

// All the lines kept, drawn again: the filter changed, or the lines were cleared.
function render() {
  drawn = filter();
  const box = $("logs-lines");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
  box.replaceChildren(...lines.filter((l) => matches(l, drawn)).map(nodeOf));
  note(box);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// A poll's lines added at the end and those it pushed out of the kept ones removed, the others
// left as they are: drawing all 2,000 again at every poll was most of the page's work.
// Scrolled up, the reader keeps their place: the lines taken off the top would move what they
// read up by as much. The first line kept is where it was, whether the browser anchors the
// scroll position itself (Chromium's CSS scroll anchoring) or not: the scroll position is set,
// not moved by.
function update(added, dropped) {
  const now = filter();
  if (!drawn || drawn.min !== now.min || drawn.needle !== now.needle) return render();
  const box = $("logs-lines");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
  const scrolled = box.scrollTop;
  const kept = !atBottom && dropped.some((l) => l.node) ? firstKept(box, dropped) : null;
  const keptAt = kept ? kept.offsetTop : 0;
  for (const l of dropped) if (l.node) l.node.remove();
  box.append(...added.filter((l) => matches(l, drawn)).map(nodeOf));
  note(box);
  if (atBottom) box.scrollTop = box.scrollHeight;
  else if (kept) box.scrollTop = scrolled - (keptAt - kept.offsetTop);
}

// The first line drawn that stays: the dropped ones are the oldest, at the top.
function firstKept(box, dropped) {
  const gone = new Set(dropped.map((l) => l.node));
  let node = box.firstElementChild;
  while (node && (gone.has(node) || !node.classList.contains("log-line"))) node = node.nextElementSibling;
  return node;
}

// What an empty box says, changed only when it says something else (the box is a live log).
function note(box) {
  const old = box.querySelector(":scope > p.muted");
  const empty = !box.querySelector(":scope > .log-line");
  const text = !empty ? null : lines.length ? "No line matches the filter." : "Waiting for log lines…";
  if (old && old.textContent === text) return;
  if (old) old.remove();
  if (text) box.append(el("p", { class: "muted", text }));
}
