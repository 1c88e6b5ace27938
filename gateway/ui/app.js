// The shell: one Gateway connection, the navigation, and which screen is on. Each screen
// module exports `init(ctx)`, `show(arg, reconnected)` and optionally `hide()`.

import { Gateway } from "./gateway.js";
import { $, show } from "./dom.js";
import * as connect from "./connect.js";
import * as chat from "./chat.js";
import * as sessions from "./sessions.js";
import * as status from "./status.js";
import * as logs from "./logs.js";
import * as config from "./config.js";

const SCREENS = { connect, chat, sessions, status, logs, config };
const gw = new Gateway();
let current = null;

const ctx = {
  gw,
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  // A modal yes/no; resolves true on confirm. <dialog> keeps focus inside and Esc cancels.
  confirm(text, action = "Confirm") {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = action;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  },
};

// The fragment is anyone's to write (a link, the address bar): a name that is no screen of
// ours (`#toString` is a property of every object) or an escape that does not decode opens the
// default screen instead of throwing.
function parseHash() {
  const raw = location.hash.replace(/^#/, "");
  const slash = raw.indexOf("/");
  const name = slash < 0 ? raw : raw.slice(0, slash);
  let arg = "";
  try {
    arg = slash < 0 ? "" : decodeURIComponent(raw.slice(slash + 1));
  } catch {
    // a malformed %-escape: no argument
  }
  return { name: Object.hasOwn(SCREENS, name) ? name : "", arg };
}

// Connected, or getting a lost connection back: an attempt after the first (which may take
// up to 10 s) keeps the screens, the navigation and Disconnect, so a user can give up.
function live() {
  return gw.state === "connected" || gw.state === "waiting" || (gw.state === "connecting" && gw.everConnected);
}

function route() {
  let { name, arg } = parseHash();
  if (!live()) name = "connect";
  else if (!name || name === "connect") name = "chat";
  if (current && current !== name && SCREENS[current].hide) SCREENS[current].hide();
  for (const key of Object.keys(SCREENS)) show($(`screen-${key}`), key === name);
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.screen === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = name;
  SCREENS[name].show(arg);
}

// The header's state is a live region: it changes, and is read out, when the state does,
// not at each attempt of a reconnect. The countdown to the next attempt is beside it, out of
// the live region (a number read out each second would drown everything else).
let countdown = null;

function renderState(detail) {
  const node = $("conn-state");
  node.dataset.state = detail.state;
  const texts = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: "Connected",
    failed: "Not connected",
  };
  let text = texts[detail.state] || detail.state;
  const reconnecting = live() && detail.state !== "connected";
  if (reconnecting) text = "Connection lost, reconnecting…";
  if (detail.state === "connected" && gw.hello && gw.hello.server) {
    text = `Connected · clawgate ${gw.hello.server.version || ""}`.trim();
  }
  if (node.textContent !== text) node.textContent = text;
  clearInterval(countdown);
  countdown = detail.state === "waiting" ? setInterval(renderRetry, 200) : null;
  renderRetry();
  show($("conn-retry"), reconnecting);
  show($("nav"), live());
  show($("disconnect"), live());
  document.body.classList.toggle("offline", reconnecting);
}

function renderRetry() {
  const left = gw.state === "waiting" ? Math.ceil((gw.retryAt - Date.now()) / 1000) : 0;
  const text = left > 90 ? `next try in ${Math.ceil(left / 60)} min` : left > 0 ? `next try in ${left} s` : "trying now";
  if ($("conn-retry").textContent !== text) $("conn-retry").textContent = text;
}

gw.addEventListener("state", (event) => {
  renderState(event.detail);
  const screenIsLive = current && current !== "connect";
  if (event.detail.state === "connected" && !screenIsLive) route();
  if (event.detail.state === "connected" && screenIsLive) SCREENS[current].show(parseHash().arg, true);
  if ((event.detail.state === "failed" || event.detail.state === "idle") && screenIsLive) route();
});
gw.addEventListener("failed", (event) => connect.showError(event.detail));
// Requests waited for past the request timeout (gateway.js): still waiting, not failed.
gw.addEventListener("slow", (event) => {
  const { methods } = event.detail;
  const text = methods.length === 1 ? `Still waiting for the gateway's answer to ${methods[0]}…` : `Still waiting for ${methods.length} answers from the gateway…`;
  if (methods.length && $("conn-slow").textContent !== text) $("conn-slow").textContent = text;
  show($("conn-slow"), methods.length > 0);
  show($("conn-slow-stop"), methods.length > 0);
});
$("conn-slow-stop").addEventListener("click", () => {
  gw.abandonSlow();
  // Hidden once pressed, the button dropped the focus: the forms whose wait it ended place it
  // (their handlers run first); else the screen takes it, not the start of the page.
  setTimeout(() => {
    if (!document.activeElement || document.activeElement === document.body) $("main").focus();
  });
});

$("disconnect").addEventListener("click", () => {
  connect.forget();
  gw.stop();
  location.hash = "#connect";
});
window.addEventListener("hashchange", route);
// The skip link's `#main` names no screen: followed, the router would open the chat instead.
document.querySelector("a.skip").addEventListener("click", (event) => {
  event.preventDefault();
  $("main").focus();
});

for (const screen of Object.values(SCREENS)) screen.init(ctx);
route();
connect.resume();
