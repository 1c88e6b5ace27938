// Small DOM helpers shared by the screens: building elements from nodes and text only, never
// from markup (nothing a gateway returns is ever parsed as HTML), and formatting.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A name someone else chose (a session's key or label, an agent's, a tool's) may hold bidi
// controls: obeyed, an override (U+202E) draws what follows it backwards, so a key shows as
// another, or the UI's own words after it ("Reset <key>? Its transcript is…") read reversed.
// They are shown as their code points instead; `isolated` also keeps the name's own
// right-to-left letters from moving the text around it (FSI … PDI). So are the characters
// drawn as nothing (zero-width space, joiners, word joiner, BOM): "ad\u200bmin" looked like
// "admin", two keys alike.
const BIDI = "\\u202a-\\u202e\\u2066-\\u2069";
const BIDI_CONTROLS = new RegExp(`[${BIDI}]`, "g");
const SHOWN_AS_CODE = new RegExp(`[${BIDI}\\u200b-\\u200d\\u2060\\ufeff]`, "g");
// Except a joiner that is drawn: inside an emoji sequence (👩‍💻, 🏳️‍🌈, after a skin tone or
// VS16) it makes one glyph of two, and between letters of a script whose letters join or form
// conjuncts (Persian's ZWNJ in می‌خواهم, Devanagari's ZWJ after a virama) it joins or parts
// them; as a code point there, an emoji label or a Persian name read as garbage.
const JOINING_SCRIPTS = ["Arabic", "Syriac", "Nko", "Mongolian", "Devanagari", "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu", "Kannada", "Malayalam", "Sinhala"];
const JOINING = JOINING_SCRIPTS.map((script) => `\\p{Script=${script}}`).join("");
const DRAWN_JOINER = new RegExp(
  `(?<=\\p{Extended_Pictographic}[\\u{FE0E}\\u{FE0F}\\u{1F3FB}-\\u{1F3FF}]*)\\u200d(?=\\p{Extended_Pictographic})|(?<=[${JOINING}]\\p{M}*)[\\u200c\\u200d](?=[${JOINING}])`,
  "uy",
);

function codePoint(c) {
  return `⟨U+${c.codePointAt(0).toString(16).toUpperCase()}⟩`;
}

function drawnJoiner(text, at) {
  DRAWN_JOINER.lastIndex = at;
  return DRAWN_JOINER.test(text);
}

export function shownName(name) {
  const text = String(name);
  return text.replace(SHOWN_AS_CODE, (c, at) => (drawnJoiner(text, at) ? c : codePoint(c)));
}

// A line of someone's text that tells a row from the others (a transcript's preview): its
// bidi controls are shown as code points as a name's are, or "\u202etxt.exe" reads "exe.txt"
// (and a preview cut at its length may have lost the control that closed the override). The
// characters drawn as nothing stay: in text they are letters' business (a joiner in an emoji
// or a Persian word). A message's own body is shown as written: its bubble is a block of its
// own, where an override ends.
export function shownText(text) {
  return String(text).replace(BIDI_CONTROLS, codePoint);
}

export function isolated(name) {
  return `\u2068${shownName(name)}\u2069`;
}

export function $(id) {
  return document.getElementById(id);
}

export function show(node, visible) {
  node.hidden = !visible;
}

// The same message again (a screen refreshed on a timer, the error still there) leaves the
// node alone: rewritten, an alert is read out again.
export function setAlert(node, message) {
  if (node.textContent === (message || "") && node.hidden === !message) return;
  node.textContent = message || "";
  node.hidden = !message;
}

export function formatNumber(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

export function formatAge(ms) {
  if (ms === null || ms === undefined) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return new Date(ms).toISOString().slice(0, 10);
}

export function formatDuration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

// Text of a transcript message's content: a string, or parts of which the text ones count.
export function textOf(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.filter((part) => part && part.type === "text").map((part) => part.text || "").join("");
}

// A `chat.history` answer holds the newest messages (a limit, and the gateway's 6 MiB): the
// older ones are said to be there, or the transcript would seem to start in its middle.
export function transcriptNodes(result) {
  const nodes = result.messages.map(messageNode);
  if (result.hasMore) {
    const text = `The newest ${formatNumber(nodes.length)} of ${formatNumber(result.totalMessages)} messages are shown.`;
    nodes.unshift(el("p", { class: "muted small older", text }));
  }
  return nodes;
}

// A transcript message as a bubble; parts that are not text (tool calls, reasoning) folded.
export function messageNode(message) {
  const role = message.role || "assistant";
  const body = el("div", { class: "bubble-body" });
  const parts = typeof message.content === "string" ? [{ type: "text", text: message.content }] : message.content || [];
  for (const part of parts) {
    if (!part) continue;
    // Its direction its own (the first letter's): a Hebrew or Arabic message laid out as a
    // left-to-right paragraph had its punctuation and any Latin word in the wrong places.
    if (part.type === "text") body.append(el("p", { class: "text", dir: "auto", text: part.text || "" }));
    else body.append(folded(part));
  }
  const node = el("div", { class: `bubble ${role}`, dataset: { role } }, el("span", { class: "who", text: roleName(role) }), body);
  if (message.aborted) node.append(el("span", { class: "note", text: "aborted" }));
  if (message.errorMessage) node.append(el("span", { class: "note error", text: message.errorMessage }));
  return node;
}

export function folded(part) {
  const kind = part.type || "part";
  const reasoning = kind === "thinking" || kind === "reasoning";
  const title = reasoning ? "Reasoning" : kind.toLowerCase().includes("tool") ? `Tool: ${shownName(part.name || part.toolName || kind)}` : shownName(kind);
  const detail = reasoning ? part.thinking || part.text || "" : JSON.stringify(part.arguments || part.input || part, null, 2);
  return el("details", { class: reasoning ? "reasoning" : "tool" }, el("summary", { text: title }), el("pre", { text: detail }));
}

function roleName(role) {
  return { user: "You", assistant: "Assistant", tool: "Tool", toolResult: "Tool result", system: "System" }[role] || role;
}
