// Status: health, uptime, version, agents and their models, open connections, runs in
// flight, tokens per day. Refreshed every 5 s while on screen.

import { $, el, formatDuration, formatNumber, setAlert, shownName } from "./dom.js";

const REFRESH_MS = 5000;
let ctx;
let timer = null;
let refreshing = false;

export function init(context) {
  ctx = context;
}

export async function show() {
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
  await refresh();
}

export function hide() {
  clearInterval(timer);
  timer = null;
}

function card(label, value, note, state) {
  return el("div", { class: "card stat", dataset: { stat: label.toLowerCase(), state: state || "" } }, el("div", { class: "stat-label", text: label }), el("div", { class: "stat-value", text: value }), note ? el("div", { class: "muted small", text: note }) : null);
}

async function refresh() {
  // One at a time: on a slow gateway each 5 s would add three more requests in flight (a
  // connection may have 64), and their answers could come in any order.
  if (refreshing) return;
  refreshing = true;
  const gw = ctx.gw;
  let info, health, usage;
  try {
    const poll = { poll: true };
    [info, health, usage] = await Promise.all([gw.request("system.info", {}, poll), gw.request("health", {}, poll), gw.request("usage", { days: 14 }, poll)]);
  } catch (error) {
    // No cards of a gateway that does not answer (a "Health OK" from before would mislead).
    $("status-cards").replaceChildren();
    setAlert($("status-error"), error.message);
    return;
  } finally {
    refreshing = false;
  }
  setAlert($("status-error"), "");
  const healthy = health.ok !== false && info.ready;
  $("status-cards").replaceChildren(
    card("Health", healthy ? "OK" : "Degraded", info.draining ? "draining" : info.ready ? "ready" : "not ready", healthy ? "ok" : "bad"),
    card("Uptime", formatDuration(info.uptimeMs), `since ${new Date(info.startedAt).toLocaleString()}`),
    card("Version", `clawgate ${info.version}`, `Python ${info.runtime.python} · aiohttp ${info.runtime.aiohttp}`),
    card("Connections", formatNumber(info.connections.open), `${formatNumber(info.connections.authenticated)} authenticated`),
    card("Runs in flight", formatNumber(info.runs.active), `${formatNumber(info.runs.queued)} queued · max ${formatNumber(info.runs.maxConcurrent)}`),
    card("Sessions", formatNumber(info.sessions.stored), `${formatNumber(info.sessions.live)} live in memory`),
    card("Tokens, 14 days", formatNumber(usage.totals.totalTokens), `${formatNumber(usage.totals.turns)} turns`),
  );
  $("status-agents").tBodies[0].replaceChildren(
    ...info.agents.map((a) => el("tr", {}, el("td", {}, a.id, a.default ? el("span", { class: "badge", text: "default" }) : null), el("td", { text: shownName(a.name || "") }), el("td", { text: shownName(a.model || "") }), el("td", { text: shownName(a.fallbacks.join(", ")) || "–" }))),
  );
  const days = usage.daily.slice().reverse();
  $("status-usage").tBodies[0].replaceChildren(
    ...(days.length
      ? days.map((d) => el("tr", {}, el("td", { text: d.date }), el("td", { text: d.agentId }), el("td", { class: "num", text: formatNumber(d.inputTokens) }), el("td", { class: "num", text: formatNumber(d.outputTokens) }), el("td", { class: "num", text: formatNumber(d.turns) })))
      : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No turns in the last 14 days." }))]),
  );
}
