// The connect screen: gateway URL and credential. The credential lives in sessionStorage
// (this tab only, gone when it closes), never in localStorage or a cookie.

import { $, setAlert } from "./dom.js";

const STORAGE_KEY = "clawgate.connection";
let ctx;

export function init(context) {
  ctx = context;
  const form = $("connect-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const connection = { url: String(data.get("url")).trim(), mode: data.get("mode"), secret: String(data.get("secret")) };
    // Left empty: the credential this tab holds (a failed resume or reconnect keeps it), but
    // only for the URL it was given for.
    const saved = load();
    if (!connection.secret && saved && saved.url === connection.url && saved.mode === connection.mode) {
      connection.secret = saved.secret;
    }
    attempt(connection);
  });
  for (const radio of form.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      $("connect-secret-label").textContent = radio.value === "password" ? "Password" : "Token";
    });
  }
  $("connect-url").value = defaultUrl();
}

export function show() {
  const saved = load();
  if (saved) {
    $("connect-url").value = saved.url;
    const radio = $("connect-form").querySelector(`input[name=mode][value=${saved.mode}]`);
    if (radio) radio.checked = true;
  }
  $("connect-secret").placeholder = saved ? "kept for this tab" : "";
  $("connect-secret").focus();
}

// On page load: connect again with what this tab already used.
export function resume() {
  const saved = load();
  if (saved) attempt(saved, { quiet: true });
}

export function forget() {
  sessionStorage.removeItem(STORAGE_KEY);
  $("connect-secret").placeholder = "";
}

export function showError(error) {
  setAlert($("connect-error"), error.explanation || error.message);
  if (error.refusesCredential) forget();
}

async function attempt(connection, { quiet = false } = {}) {
  setAlert($("connect-error"), "");
  if (!/^wss?:\/\//i.test(connection.url)) {
    setAlert($("connect-error"), "The gateway URL starts with ws:// or wss://.");
    return;
  }
  if (!connection.secret && !quiet) {
    setAlert($("connect-error"), `Enter the gateway ${connection.mode}.`);
    return;
  }
  const submit = $("connect-submit");
  // Disabled with the focus on it, the button drops the focus to the start of the page: a
  // failed attempt gives it back (a connected one opens the chat, which takes it).
  const fromSubmit = document.activeElement === submit;
  submit.disabled = true;
  const auth = connection.mode === "password" ? { password: connection.secret } : { token: connection.secret };
  try {
    await ctx.gw.start(connection.url, auth);
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(connection));
    $("connect-secret").value = "";
  } catch (error) {
    showError(error);
    submit.disabled = false;
    // Unless the user has put it elsewhere meanwhile (a slow gateway: the URL corrected).
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (fromSubmit && lost && !$("screen-connect").hidden) submit.focus();
  } finally {
    submit.disabled = false;
  }
}

function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    return saved && typeof saved.url === "string" ? saved : null;
  } catch {
    return null;
  }
}

// The gateway that served the page, at the page's path: under a base path (`/ops/`) that is
// `ws://host/ops`, the path a proxy that forwards only it sends on to the gateway.
function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${location.pathname.replace(/\/+$/, "")}`;
}
