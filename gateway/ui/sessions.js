// Sessions: the list with search, last activity, model and token counts; one session's
// transcript beside it, with reset and delete (each confirmed first), archive and restore.
// "Archived" lists the archived sessions instead (`sessions.list {archived: true}`), which
// the list leaves out otherwise.

import { $, el, formatAge, formatNumber, isolated, setAlert, shownName, shownText, transcriptNodes } from "./dom.js";

// A page of the list: 10,000 sessions as rows would be 10,000 previews asked for and a page
// that takes seconds to lay out. The gateway takes offsets up to 10,000.
const PAGE = 200;
const OFFSET_MAX = 10000;
let ctx;
let offset = 0; // of the page shown, in the list of the search typed
let selected = null;
let selectedInfo = null; // the picked session's row as chat.history answered it
let visible = false;
let refreshTimer = null;
let searchTimer = null;
let loads = 0; // the last load() started; only its answer is shown
let picks = 0; // the last select() started; only its transcript is shown
// The last select(), done when its detail is shown: an action pressed meanwhile waits for it,
// or it would act on the session shown before (its archived state, its session id).
let picked = Promise.resolve();

export function init(context) {
  ctx = context;
  $("sessions-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      offset = 0; // another search: its first page
      asked();
    }, 200);
  });
  $("sessions-prev").addEventListener("click", () => turn(-PAGE));
  $("sessions-next").addEventListener("click", () => turn(PAGE));
  $("sessions-archived").addEventListener("change", () => {
    offset = 0; // the other list: its first page
    asked();
  });
  $("sessions-refresh").addEventListener("click", asked);
  $("session-open").addEventListener("click", () => ctx.go(`#chat/${encodeURIComponent(selected)}`));
  $("session-reset").addEventListener("click", reset);
  $("session-delete").addEventListener("click", remove);
  $("session-archive").addEventListener("click", archive);
  $("sessions-table").tBodies[0].addEventListener("keydown", walk);
  // Another client's turn or reset: refresh the list, at most once a second.
  ctx.gw.addEventListener("sessions.changed", () => {
    if (!visible || refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      load();
    }, 1000);
  });
}

export async function show(arg) {
  visible = true;
  setAlert($("sessions-error"), "");
  if (arg) selected = arg;
  await load();
  if (selected) await select(selected);
}

export function hide() {
  visible = false;
}

// A load the operator asked for clears the last error; one after a change made elsewhere
// leaves it shown.
function asked() {
  setAlert($("sessions-error"), "");
  return load();
}

// Loads overlap (a search typed while a refresh is answered) and their answers come in any
// order: an older one, shown last, would list another search's sessions.
async function load() {
  const search = $("sessions-search").value.trim();
  const archived = $("sessions-archived").checked;
  const mine = ++loads;
  let listed;
  try {
    listed = await ctx.gw.request("sessions.list", { limit: PAGE, offset: offset || undefined, search: search || undefined, archived: archived || undefined });
  } catch (error) {
    if (mine === loads) setAlert($("sessions-error"), error.message);
    return;
  }
  if (mine !== loads) return;
  // Past the end (sessions deleted meanwhile): the last page there is.
  const last = Math.min(OFFSET_MAX, Math.floor(Math.max(0, listed.totalCount - 1) / PAGE) * PAGE);
  if (!listed.sessions.length && offset > last) {
    offset = last;
    return load();
  }
  const previews = await previewsOf(listed.sessions.map((s) => s.key));
  if (mine !== loads) return;
  const rows = listed.sessions.map((s) => {
    const open = el("button", { type: "button", class: "link", text: shownName(s.label || s.key), tabindex: "-1", onclick: () => select(s.key) });
    const preview = previews.get(s.key);
    return el(
      "tr",
      { dataset: { key: s.key }, class: s.key === selected ? "selected" : "" },
      el("td", {}, open, s.label ? el("div", { class: "muted small session-key", text: shownName(s.key) }) : null, preview ? el("div", { class: "preview", dir: "auto", text: shownText(preview) }) : null),
      el("td", { text: s.agentId }),
      s.model ? el("td", { class: "model", title: shownName(modelName(s)) }, modelParts(shownName(modelName(s)))) : el("td", { class: "model", text: "–" }),
      el("td", { class: "num", text: `${formatNumber(s.inputTokens)} / ${formatNumber(s.outputTokens)}` }),
      el("td", { text: formatAge(s.updatedAt), title: s.updatedAt ? new Date(s.updatedAt).toISOString() : "" }),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted", text: search ? "No session matches." : archived ? "No archived sessions." : "No sessions yet." })));
  // Rows are built anew: the one a keyboard user was on gets the focus back (a row gone,
  // deleted elsewhere, hands it to the search field, as a delete here does).
  const body = $("sessions-table").tBodies[0];
  const focusedRow = body.contains(document.activeElement) ? document.activeElement.closest("tr") : null;
  body.replaceChildren(...rows);
  rove(focusedRow ? focusedRow.dataset.key : selected);
  if (focusedRow) {
    const again = rows.find((row) => row.dataset.key === focusedRow.dataset.key);
    (again ? again.querySelector("button") : $("sessions-search")).focus();
  }
  const total = `${formatNumber(listed.totalCount)}${archived ? " archived" : ""} session${listed.totalCount === 1 ? "" : "s"}`;
  const paged = offset > 0 || listed.totalCount > listed.sessions.length;
  const shown = `${formatNumber(offset + 1)}–${formatNumber(offset + listed.sessions.length)}`;
  $("sessions-count").textContent = paged && listed.sessions.length ? `${shown} of ${total}` : total;
  $("sessions-pager").hidden = !paged;
  setDisabled($("sessions-prev"), offset === 0, $("sessions-next"));
  setDisabled($("sessions-next"), offset + listed.sessions.length >= listed.totalCount || offset + PAGE > OFFSET_MAX, $("sessions-prev"));
}

// A model without its provider (a session whose provider is not recorded) is named alone:
// "/gpt-4o" read as a provider's name gone missing.
function modelName(session) {
  return session.modelProvider ? `${session.modelProvider}/${session.model}` : session.model;
}

// A model id is drawn to wrap at its separators only, never mid-word ("fake/ec" / "ho" on a
// phone): a break opportunity after each "/", ".", "_", ":" and "@" (a browser breaks after
// "-" by itself). A part longer than MODEL_PART_CHARS may be cut with an ellipsis where the
// column is narrower (app.css), the whole id in the cell's title.
const MODEL_PART_CHARS = 6;
function modelParts(name) {
  return name.split(/(?<=[/._:@-])/).flatMap((part, i) => [
    i ? el("wbr") : null,
    part.length > MODEL_PART_CHARS ? el("span", { class: "model-part", text: part }) : part,
  ]);
}

function turn(by) {
  offset = Math.max(0, offset + by);
  return asked();
}

// Disabled with the focus on it, a button drops the focus to the start of the page: the
// other one takes it.
function setDisabled(button, disabled, other) {
  if (disabled && document.activeElement === button) other.focus();
  button.disabled = disabled;
}

// The list is one tab stop, the picked row's (else the first); the arrow keys, Home and End
// walk its rows. As one stop per row, a keyboard user tabbed through up to 200 of them to
// reach the picked session's actions.
function rowButtons() {
  return [...$("sessions-table").tBodies[0].querySelectorAll("tr[data-key] button")];
}

function rove(key) {
  const buttons = rowButtons();
  const stop = buttons.find((b) => b.closest("tr").dataset.key === key) || buttons[0];
  for (const button of buttons) button.tabIndex = button === stop ? 0 : -1;
}

function walk(event) {
  const buttons = rowButtons();
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: buttons.length - 1 }[event.key];
  if (to === undefined || to < 0 || to >= buttons.length) return;
  event.preventDefault(); // not the page's scroll
  buttons[at].tabIndex = -1;
  buttons[to].tabIndex = 0;
  buttons[to].focus();
}

// The last message of each listed session, in one call.
async function previewsOf(keys) {
  const found = new Map();
  for (let i = 0; i < keys.length; i += 64) {
    try {
      const answer = await ctx.gw.request("sessions.preview", { keys: keys.slice(i, i + 64), limit: 1, maxChars: 120 });
      for (const entry of answer.previews) if (entry.items.length) found.set(entry.key, entry.items[0].text);
    } catch {
      break; // previews are a nicety; the list stands without them
    }
  }
  return found;
}

// Rows picked in quick succession (or one picked again after a reset): their transcripts come
// in any order, and an earlier one, shown last, would sit under the last pick's key.
function select(key) {
  picked = pick(key);
  return picked;
}

async function pick(key) {
  const mine = ++picks;
  selected = key;
  setAlert($("sessions-error"), "");
  // Off screen (a slow list answered after the user went on), the address is another's.
  if (visible) history.replaceState(null, "", `#sessions/${encodeURIComponent(key)}`);
  for (const row of $("sessions-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.key === key);
  rove(key);
  const detail = $("session-detail");
  detail.hidden = false;
  $("session-detail-key").textContent = shownName(key);
  // Under the list on a narrow screen: brought up, or the pick would seem to do nothing.
  const box = detail.getBoundingClientRect();
  if (box.top < 0 || box.top > window.innerHeight - 40) detail.scrollIntoView({ block: "start" });
  try {
    const result = await ctx.gw.request("chat.history", { sessionKey: key, limit: 100 });
    if (mine !== picks) return;
    const info = result.sessionInfo || {};
    selectedInfo = info;
    const archivedAt = info.archived ? ` · archived ${formatAge(info.archivedAt)}` : "";
    $("session-detail-meta").textContent = `${result.totalMessages} messages · ${formatNumber(info.inputTokens)} in / ${formatNumber(info.outputTokens)} out · ${formatAge(info.updatedAt)}${archivedAt}`;
    // An archived session takes no reset (the gateway refuses it) until restored.
    $("session-reset").hidden = Boolean(info.archived);
    $("session-archive").textContent = info.archived ? "Restore" : "Archive";
    const messages = transcriptNodes(result);
    $("session-transcript").replaceChildren(...(messages.length ? messages : [el("p", { class: "muted", text: "Empty transcript." })]));
  } catch (error) {
    if (mine !== picks) return;
    setAlert($("sessions-error"), error.message);
    $("session-detail-meta").textContent = ""; // not another session's under this key
    selectedInfo = null;
    $("session-reset").hidden = false;
    $("session-archive").textContent = "Archive";
    $("session-transcript").replaceChildren();
  }
}

async function reset() {
  await picked;
  if (!selected || !(await ctx.confirm(`Reset ${isolated(selected)}? Its transcript is archived and a new one starts.`, "Reset"))) return;
  await act("sessions.reset", { key: selected });
}

// Archived or restored as OpenClaw's CLI does, naming the session read: one reset or made
// again since is another, and the gateway refuses the change.
async function archive() {
  await picked;
  if (!selected) return;
  const info = selectedInfo || {};
  await act("sessions.patch", { key: selected, archived: !info.archived, expectedSessionId: info.sessionId || undefined });
}

async function remove() {
  await picked;
  if (!selected || !(await ctx.confirm(`Delete ${isolated(selected)} and its transcripts? This cannot be undone.`, "Delete"))) return;
  const key = selected;
  // The archived session shown, not one restored elsewhere meanwhile.
  const archivedOnly = selectedInfo && selectedInfo.archived ? true : undefined;
  if (await act("sessions.delete", { key, archivedOnly })) {
    selected = null;
    $("session-detail").hidden = true;
    if (visible) history.replaceState(null, "", "#sessions");
    $("sessions-search").focus(); // the focused Delete button is hidden with the detail
  }
}

async function act(method, params) {
  setAlert($("sessions-error"), "");
  try {
    await ctx.gw.request(method, params);
  } catch (error) {
    setAlert($("sessions-error"), error.message);
    return false;
  }
  await load();
  if (selected) await select(selected);
  return true;
}
