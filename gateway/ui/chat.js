// Chat: pick an agent and a session (or start one), send, watch the answer stream in,
// abort. The screen follows its session with chat.subscribe, so this connection gets that
// session's run events only (and still every sessions.changed).

import { $, el, folded, isolated, messageNode, setAlert, shownName, transcriptNodes } from "./dom.js";
import { randomId } from "./gateway.js";

let ctx;
let agents = [];
let sessionKey = null; // canonical key on screen
let followed = null; // key we are subscribed to
let following = Promise.resolve(); // the last change of subscription; each waits for the one before
const runs = new Map(); // runId -> {bubble, text}
let listings = 0; // the last loadSessions() started; only its answer is shown
// A send whose answer never came, its message put back into the input: {sessionKey, runId,
// message}. The gateway may have taken it before the connection was lost.
let unanswered = null;
let visible = false;
// The messages of a session the transcript shows, its newest.
const SHOWN = 200;
// An agent's id as the config takes it (the gateway's ID_PATTERN).
const AGENT_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;
// chat.send's one command: it aborts the session's runs and starts none (ws-protocol.md §8).
const STOP_COMMAND = "/stop";

export function init(context) {
  ctx = context;
  const gw = ctx.gw;
  $("chat-agent").addEventListener("change", () => pickAgent($("chat-agent").value));
  $("chat-session").addEventListener("change", () => openSession($("chat-session").value));
  $("chat-new").addEventListener("click", () => newSession());
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("chat-abort").addEventListener("click", abort);
  $("transcript").addEventListener("scroll", () => {
    const transcript = $("transcript");
    atEnd = transcript.scrollTop + transcript.clientHeight >= transcript.scrollHeight - 20;
  });
  gw.addEventListener("agent", (event) => onAgent(event.detail));
  gw.addEventListener("chat", (event) => onChat(event.detail));
  gw.addEventListener("hello", () => {
    followed = null; // a new connection has no subscriptions
    if (visible && sessionKey) follow(sessionKey);
  });
}

// `reconnected`: shown again after a lost connection came back, not opened by the user.
export async function show(arg, reconnected = false) {
  visible = true;
  const focused = document.activeElement;
  setAlert($("chat-error"), "");
  try {
    const listed = await ctx.gw.request("agents.list");
    offerAgents(listed.agents);
    const select = $("chat-agent");
    // A key from the address is the canonical one lowercased (agents-sessions.md §4): the
    // events of its runs name the canonical key, and are matched against it.
    let wanted = arg ? arg.trim().toLowerCase() : sessionKey;
    // A link's agent that can be no agent's id (`#chat/agent:<any words>:x`) is not quoted:
    // the alert would show the link's author's words as the page's own.
    const named = agentOf(wanted);
    if (named !== null && !AGENT_ID.test(named)) {
      setAlert($("chat-error"), "The link names no agent of this gateway.");
      wanted = sessionKey;
    }
    const agentId = agentOf(wanted) || listed.defaultId;
    select.value = agentId;
    // Its kept sessions can still be read; a message to one is refused.
    if (!agents.some((a) => a.id === agentId)) setAlert($("chat-error"), `The gateway has no agent '${agentId}'.`);
    await loadSessions(agentId, wanted);
  } catch (error) {
    setAlert($("chat-error"), error.message);
  }
  // The message box takes the focus when the screen is opened, unless the user has put it
  // elsewhere while it loaded (a slow gateway) or left the screen; a reconnect leaves it be.
  // A focused field hidden meanwhile (the connect screen's) gives the focus back to the body.
  const now = document.activeElement;
  const moved = now !== focused && now !== null && now !== document.body;
  if (visible && !reconnected && !moved) $("chat-input").focus();
}

export function hide() {
  visible = false;
}

function agentOf(key) {
  const match = /^agent:([^:]+):/.exec(key || "");
  return match ? match[1] : null;
}

function offerAgents(list) {
  agents = list;
  $("chat-agent").replaceChildren(...agents.map((a) => el("option", { value: a.id, text: a.name && a.name !== a.id ? `${isolated(a.name)} (${a.id})` : a.id })));
}

// The list on screen may be older than the gateway's config (a reload removes an agent): it
// is asked again, and a switch that fails leaves the picker on the session shown.
async function pickAgent(agentId) {
  const mine = ++listings;
  setAlert($("chat-error"), "");
  try {
    const listed = await ctx.gw.request("agents.list");
    if (mine !== listings) return;
    offerAgents(listed.agents);
    if (!agents.some((a) => a.id === agentId)) throw new Error(`The gateway has no agent '${agentId}' any more.`);
    $("chat-agent").value = agentId;
    await loadSessions(agentId, null, mine);
  } catch (error) {
    if (mine !== listings) return;
    $("chat-agent").value = agentOf(sessionKey) || "";
    setAlert($("chat-error"), error.message);
  }
}

// Agents picked in quick succession: their lists come in any order, and an earlier one, shown
// last, would open another agent's session under the last agent picked.
async function loadSessions(agentId, wanted, mine = ++listings) {
  const listed = await ctx.gw.request("sessions.list", { agentId, limit: 100 });
  if (mine !== listings) return;
  const keys = listed.sessions.map((s) => s.key);
  let key = wanted && agentOf(wanted) === agentId ? wanted : keys[0];
  if (!key) key = newKey(agentId);
  const options = listed.sessions.map((s) => el("option", { value: s.key, text: optionText(s) }));
  if (!keys.includes(key)) options.unshift(freshOption(key));
  $("chat-session").replaceChildren(...options);
  $("chat-session").value = key;
  await openSession(key);
}

function optionText(session) {
  return session.label ? `${isolated(session.label)} — ${shownName(session.key)}` : shownName(session.key);
}

// A session not stored yet: its first turn stores it.
function freshOption(key) {
  return el("option", { value: key, text: `${isolated(key)} (new)`, dataset: { fresh: "" } });
}

function newKey(agentId) {
  return `agent:${agentId}:ui-${randomId().slice(0, 8)}`;
}

async function newSession() {
  const focused = document.activeElement;
  const agentId = $("chat-agent").value;
  const key = newKey(agentId);
  $("chat-session").prepend(freshOption(key));
  $("chat-session").value = key;
  await openSession(key);
  // As when the screen is opened: the message box takes the focus unless the user has put it
  // elsewhere while the session loaded, or left the screen.
  const now = document.activeElement;
  const moved = now !== focused && now !== null && now !== document.body;
  if (visible && !moved) $("chat-input").focus();
}

// A message sent while its session loads waits for the load: the history replaces the
// transcript, and took away with it the bubbles put there meanwhile, the answer streamed into
// one no longer on the page.
let loaded = Promise.resolve();

function openSession(key) {
  const load = loadSession(key);
  loaded = load.catch(() => {});
  return load;
}

async function loadSession(key) {
  // The session on screen loaded again (a reconnect, a turn from elsewhere): a reader scrolled
  // up keeps the place; one at the end stays at the end.
  const shown = $("transcript");
  const again = key === sessionKey;
  const keep = again && shown.scrollTop + shown.clientHeight < shown.scrollHeight - 20 ? shown.scrollTop : null;
  sessionKey = key;
  // Off screen (the user went on while a slow gateway answered), the address is another
  // screen's: rewritten, a reload would open the chat.
  if (visible) history.replaceState(null, "", `#chat/${encodeURIComponent(key)}`);
  runs.clear();
  setBusy(null);
  // Another session picked meanwhile (arrow keys on the list) is the one to show: answers of
  // concurrent calls come in any order.
  await follow(key);
  if (key !== sessionKey) return;
  const transcript = $("transcript");
  // Another session's messages go at once; the same session's stay until its history replaces
  // them in one step (emptied first, the transcript blinked out at every reload).
  if (!again) transcript.replaceChildren();
  try {
    const result = await ctx.gw.request("chat.history", { sessionKey: key, limit: SHOWN });
    if (key !== sessionKey) return;
    const nodes = transcriptNodes(result);
    if (!result.messages.length) nodes.push(el("p", { class: "muted empty", text: "No messages yet. Say something." }));
    transcript.replaceChildren(...nodes);
    // Not among the agent's newest sessions listed, but stored (`sessionId`): not new.
    if (result.sessionId) stored(key, result.sessionInfo);
    forgetIfTaken(key, result.messages);
    const active = result.sessionInfo && result.sessionInfo.activeRunIds;
    if (active && active.length) setBusy(active[active.length - 1]);
  } catch (error) {
    setAlert($("chat-error"), error.message);
  }
  if (keep === null) scrollDown(!again);
  else transcript.scrollTop = keep;
}

// The transcript holds the message put back into the input (the gateway stores it under the
// run's idempotency key and `:user`): the gateway took it, and sending it again would run the
// turn twice.
function forgetIfTaken(key, messages) {
  if (!unanswered || unanswered.sessionKey !== key) return;
  const { runId, message } = unanswered;
  if (!messages.some((m) => m.role === "user" && m.idempotencyKey === `${runId}:user`)) return;
  unanswered = null;
  const input = $("chat-input");
  if (input.value === message) input.value = "";
}

// One change at a time: two interleaved would each unsubscribe the session they saw
// followed, and could leave the one on screen unsubscribed.
function follow(key) {
  following = following.then(() => refollow(key));
  return following;
}

async function refollow(key) {
  if (followed === key) return;
  const gw = ctx.gw;
  try {
    if (followed) await gw.request("chat.unsubscribe", { sessionKey: followed });
    const answer = await gw.request("chat.subscribe", { sessionKey: key });
    followed = answer.sessionKey;
  } catch (error) {
    setAlert($("chat-error"), error.message);
  }
}

async function send() {
  await loaded;
  const input = $("chat-input");
  const message = input.value;
  if (!message.trim() || !sessionKey) return;
  setAlert($("chat-error"), "");
  if (message.trim() === STOP_COMMAND) {
    // No turn answers it: no bubbles; the aborted run's own events end its bubble.
    input.value = "";
    try {
      await ctx.gw.request("chat.send", { sessionKey, message, idempotencyKey: randomId() });
    } catch (error) {
      setAlert($("chat-error"), error.message);
    }
    return;
  }
  const key = sessionKey;
  const runId = randomId();
  const transcript = $("transcript");
  const empty = transcript.querySelector(".empty");
  if (empty) empty.remove();
  const asked = messageNode({ role: "user", content: message });
  transcript.append(asked);
  const bubble = pendingBubble();
  transcript.append(bubble);
  runs.set(runId, { bubble, text: "" });
  input.value = "";
  setBusy(runId);
  scrollDown(true);
  try {
    await ctx.gw.request("chat.send", { sessionKey: key, message, idempotencyKey: runId });
    unanswered = null;
  } catch (error) {
    // Refused or never sent: the gateway has no such turn (a connection lost meanwhile
    // reloads the transcript, which tells). The message goes back to the input to send
    // again, not into the transcript, where sending it again would show it twice.
    runs.delete(runId);
    asked.remove();
    bubble.remove();
    if (!input.value) input.value = message;
    // Its wait given up ("Stop waiting", which hid itself): the message box takes the focus.
    if (!document.activeElement || document.activeElement === document.body) input.focus();
    // Sent again while still offline: the first attempt is the one the gateway may have.
    const again = unanswered && unanswered.sessionKey === key && unanswered.message === message;
    if (!again) unanswered = { sessionKey: key, runId, message };
    setBusy(null);
    setAlert($("chat-error"), error.message);
  }
}

async function abort() {
  const runId = $("chat-abort").dataset.runId;
  if (!runId || !sessionKey) return;
  try {
    await ctx.gw.request("chat.abort", { sessionKey, runId });
  } catch (error) {
    setAlert($("chat-error"), error.message);
  }
}

function pendingBubble() {
  const node = messageNode({ role: "assistant", content: [{ type: "text", text: "" }] });
  node.classList.add("streaming");
  node.setAttribute("aria-busy", "true");
  return node;
}

function runFor(payload) {
  if (payload.sessionKey !== sessionKey) return null;
  let run = runs.get(payload.runId);
  if (!run) {
    // A run started elsewhere (another client, the HTTP API) on the session we show.
    const bubble = pendingBubble();
    $("transcript").append(bubble);
    run = { bubble, text: "", foreign: true };
    runs.set(payload.runId, run);
    setBusy(payload.runId);
  }
  return run;
}

// `agent` events carry every token; `chat` deltas are throttled to one per 150 ms.
function onAgent(payload) {
  if (payload.stream === "lifecycle" || payload.stream === "usage") return;
  const run = runFor(payload);
  if (!run) return;
  const data = payload.data || {};
  if (payload.stream === "assistant") {
    run.text = data.text || run.text + (data.delta || "");
    run.bubble.querySelector(".text").textContent = run.text;
  } else if (payload.stream === "thinking") {
    // Reasoning streams like the answer, a piece an event: one folded block that grows.
    run.reasoning ??= appendPart(run, { type: "thinking" });
    const pre = run.reasoning.querySelector("pre");
    pre.textContent = data.text || pre.textContent + (data.delta || "");
  } else if (payload.stream === "tool") {
    toolPart(run, data);
  } else {
    return; // a stream this page does not know
  }
  scrollDown();
}

function appendPart(run, part) {
  const node = folded(part);
  run.bubble.querySelector(".bubble-body").append(node);
  return node;
}

// A tool call: one folded block per call (`start`), its arguments as `update` pieces add
// them, and a `result` adds the result. The pieces are shown as they come and indented once
// whole (the run's end, or the result): parsing all of them again at each piece made a call
// whose arguments came in n pieces cost O(n²), gigabytes for a megabyte in small pieces.
function toolPart(run, data) {
  run.tools ??= new Map();
  const id = data.toolCallId ?? data.index;
  let tool = run.tools.get(id);
  if (!tool) {
    tool = { node: appendPart(run, { type: "toolCall", name: data.name || "tool" }), args: "", result: "" };
    tool.node.querySelector("pre").textContent = "";
    run.tools.set(id, tool);
  }
  if (data.phase === "update" && typeof data.delta === "string") {
    tool.args += data.delta;
    if (tool.result) showTool(tool);
    else tool.node.querySelector("pre").append(data.delta);
  }
  if (data.phase === "result") {
    tool.result = typeof data.result === "string" ? data.result : JSON.stringify(data.result);
    showTool(tool);
  }
}

function showTool(tool) {
  let text = tool.args;
  try {
    text = JSON.stringify(JSON.parse(tool.args), null, 2); // as the stored transcript shows it
  } catch {
    // not JSON (a call cut short): as it came
  }
  tool.node.querySelector("pre").textContent = tool.result ? `${text}\n→ ${tool.result}` : text;
}

function onChat(payload) {
  const run = runFor(payload);
  if (!run) return;
  const text = payload.message ? payloadText(payload.message) : run.text;
  if (payload.state === "delta") {
    if (text.length > run.text.length) {
      run.text = text;
      run.bubble.querySelector(".text").textContent = text;
    }
    return;
  }
  run.bubble.classList.remove("streaming");
  run.bubble.removeAttribute("aria-busy");
  for (const tool of run.tools ? run.tools.values() : []) showTool(tool);
  run.bubble.querySelector(".text").textContent = text;
  if (payload.state === "aborted") run.bubble.append(el("span", { class: "note", text: "aborted" }));
  if (payload.state === "error") run.bubble.append(el("span", { class: "note error", text: payload.errorMessage || "failed" }));
  runs.delete(payload.runId);
  stored(sessionKey, null);
  if ($("chat-abort").dataset.runId === payload.runId) setBusy(null);
  // Fetch the user message we never saw; off screen, coming back loads it (and the address
  // is another screen's). A turn of this page's own that takes the transcript past what a
  // load shows loads it too: the newest SHOWN messages and the line saying so, as opening the
  // session does, not a transcript that grows by two messages a turn in a tab left open.
  const bound = $("transcript").querySelectorAll(".bubble").length > SHOWN;
  if ((run.foreign || bound) && visible) reload();
  scrollDown();
}

// The session on screen loaded again after a turn from elsewhere, one load at a time: a client
// running turns back to back had as many loads of up to 200 messages in flight as turns ended,
// each emptying the transcript. Turns that end during a load get one more, after it.
let reloading = false;
let reloadAgain = false;

async function reload() {
  if (reloading) {
    reloadAgain = true;
    return;
  }
  reloading = true;
  try {
    do {
      reloadAgain = false;
      await openSession(sessionKey);
    } while (reloadAgain && visible);
  } finally {
    reloading = false;
  }
}

// The picked session offered as new is stored (a turn stored it, or it is older than the list).
function stored(key, info) {
  const option = $("chat-session").selectedOptions[0];
  if (!option || option.value !== key || option.dataset.fresh === undefined) return;
  option.textContent = optionText({ key, label: info && info.label });
  delete option.dataset.fresh;
}

function payloadText(message) {
  const content = message.content;
  if (typeof content === "string") return content;
  return (content || []).filter((p) => p.type === "text").map((p) => p.text).join("");
}

function setBusy(runId) {
  const abortButton = $("chat-abort");
  // Disabled with the focus on it, it drops the focus to the start of the page: the message
  // box takes it, where the next message is typed.
  if (!runId && document.activeElement === abortButton) $("chat-input").focus();
  abortButton.disabled = !runId;
  if (runId) abortButton.dataset.runId = runId;
  else delete abortButton.dataset.runId;
}

// Once a frame: reading scrollHeight lays the transcript out, and a long answer streamed a
// token an event laid out all its text again for every token.
// A reader scrolled up stays where they are: what streams in (a turn from elsewhere, or their
// own as they read back) follows the end only while the transcript is at its end. `force`:
// the user's own message sent, another session opened.
let scrolling = 0;
let forced = false;
let atEnd = true; // the transcript, when last scrolled

function scrollDown(force = false) {
  forced ||= force;
  if (scrolling) return;
  scrolling = requestAnimationFrame(() => {
    scrolling = 0;
    const go = forced || atEnd;
    forced = false;
    if (!go) return;
    const transcript = $("transcript");
    transcript.scrollTop = transcript.scrollHeight;
  });
}
