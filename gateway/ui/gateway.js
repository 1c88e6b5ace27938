// The gateway's WebSocket protocol (OpenClaw protocol 3 and 4) for the browser: the
// handshake, requests matched to responses by id, events, and reconnecting with back-off
// after a connection that had worked is lost. Nothing else: the screens call methods.

export const CLIENT = {
  id: "clawgate-control-ui",
  version: "1",
  platform: "web",
  mode: "webchat",
  displayName: "Control UI",
};
const SCOPES = ["operator.admin", "operator.read", "operator.write"];
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 15000; // a restarting gateway is back within seconds; don't hammer it
// From opening the socket to hello-ok. A gateway answers in milliseconds, a slow link in a
// few seconds; a port that takes the connection and never answers (a stalled process,
// another service) would otherwise keep the page "Connecting…" for minutes.
const HANDSHAKE_TIMEOUT_MS = 10000;
// The gateway sends a tick every `policy.tickIntervalMs` (30 s). Nothing at all for two of
// them, and the connection is taken as lost: a stalled gateway, or a link dropped without a
// word (a laptop asleep, another network), leaves the socket open for many minutes.
const TICK_DEFAULT_MS = 30000;
const TICK_MIN_MS = 1000; // a gateway asking for less would have us close a live connection
const TICK_MAX_MS = 600000; // past 2^31 ms a browser timer fires at once, and again, and again
const MISSED_TICKS = 2;
// From a request to its answer. Every method the page calls is answered from the gateway's
// memory or its store in milliseconds (chat.send acknowledges before the turn runs). One
// unanswered for 20 s on a connection whose ticks still come is a stalled handler or a very
// slow store, and the page cannot tell which: the request goes on being waited for, and the
// header says so (a "slow" event), rather than be called failed while the gateway may still
// do it (a config.patch saved, a session deleted) and answer; the user may stop waiting
// (abandonSlow), as only they know how long is too long. A poll (a screen refreshed on a
// timer) gives up instead: the next one asks again, and its screen does not stop.
const REQUEST_TIMEOUT_MS = 20000;

export class GatewayError extends Error {
  constructor(error) {
    super(error.message || "request failed");
    this.code = error.code || "UNAVAILABLE";
    this.details = error.details || {};
    this.retryAfterMs = error.retryAfterMs;
    this.retryable = error.retryable;
  }

  // What an operator should read: auth failures in words, others as the server said them.
  get explanation() {
    const code = this.details.code || "";
    if (code === "AUTH_RATE_LIMITED") {
      const minutes = Math.max(1, Math.ceil((this.retryAfterMs || 60000) / 60000));
      return `Locked out after too many failed attempts. Try again in ${minutes} minute${minutes === 1 ? "" : "s"}.`;
    }
    if (code === "PROTOCOL_MISMATCH") {
      // A gateway upgraded under an open page: its own page speaks its protocol.
      const theirs = this.details.expectedProtocol ? ` (the gateway's: ${this.details.expectedProtocol})` : "";
      return `This page and the gateway speak different protocol versions${theirs}. Reload the page.`;
    }
    if (!this.refusesCredential) return this.message;
    if (code.endsWith("_MISMATCH")) {
      const what = code.includes("PASSWORD") ? "password" : "token";
      return `Wrong ${what}: the gateway refused it.`;
    }
    if (code.endsWith("_MISSING")) {
      const what = code.includes("PASSWORD") ? "password" : "token";
      return `This gateway needs a ${what}.`;
    }
    return this.message;
  }

  // Turned away for now (this address locked out, the gateway's store away): ask again later.
  get isTemporary() {
    return this.retryable === true || this.code === "UNAVAILABLE";
  }

  // The credential itself was refused (wrong or missing), not merely turned away for now: a
  // lock-out is the address's, earned by others' failures too, and ends.
  get refusesCredential() {
    return /^AUTH_.*_(MISMATCH|MISSING)$/.test(String(this.details.code || ""));
  }
}

export class Gateway extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.target = null; // {url, auth} while we want to be connected
    this.pending = new Map();
    this.challenged = new WeakSet(); // sockets that have sent their connect
    this.nextId = 1;
    this.state = "idle"; // idle | connecting | connected | waiting | failed
    this.hello = null;
    this.everConnected = false;
    this.attempt = 0;
    this.timer = null;
    this.handshakeTimer = null;
    this.watchdog = null;
    this.lastHeard = 0;
    this.retryAt = 0;
    this.retryAfterMs = 0; // the least wait before the next attempt, as the gateway asked
  }

  // Connect; resolves with hello-ok, rejects with the first failure (then stops).
  start(url, auth) {
    this.stop();
    this.target = { url, auth };
    this.everConnected = false;
    this.attempt = 0;
    return new Promise((resolve, reject) => {
      this.firstResult = { resolve, reject };
      this.open();
    });
  }

  stop() {
    this.target = null;
    clearTimeout(this.timer);
    clearTimeout(this.handshakeTimer);
    clearInterval(this.watchdog);
    const ws = this.ws;
    this.ws = null;
    this.rejectPending("disconnected");
    if (ws) ws.close(1000);
    this.setState("idle");
  }

  // `poll`: a request its screen repeats on a timer, given up after REQUEST_TIMEOUT_MS.
  request(method, params = {}, { poll = false } = {}) {
    if (!this.ws || this.state !== "connected") {
      return Promise.reject(new GatewayError({ code: "DISCONNECTED", message: "Not connected to the gateway." }));
    }
    return this.send(this.ws, method, params, poll);
  }

  // The methods of the requests waited for longer than REQUEST_TIMEOUT_MS, oldest first.
  slowMethods() {
    return [...this.pending.values()].filter((waiter) => waiter.slow).map((waiter) => waiter.method);
  }

  // Stops waiting for the requests past REQUEST_TIMEOUT_MS, at the user's word: each fails (its
  // form free again) and its answer, should it come, is dropped. The gateway may still have done
  // what was asked (a config saved, a session deleted), and the error says so.
  abandonSlow() {
    for (const [id, waiter] of this.pending) {
      if (!waiter.slow) continue;
      this.pending.delete(id);
      waiter.reject(new GatewayError({ code: "ABANDONED", message: `Stopped waiting for the gateway's answer to ${waiter.method}: it may still have done it.` }));
    }
  }

  // -- internals ---------------------------------------------------------------------------

  open() {
    const { url } = this.target;
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.fail(new GatewayError({ code: "BAD_URL", message: `Not a WebSocket URL: ${withoutCredentials(url)}` }));
      return;
    }
    this.ws = ws;
    ws.addEventListener("message", (message) => this.onMessage(ws, message));
    ws.addEventListener("close", (event) => this.onClose(ws, event));
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = setTimeout(() => this.handshakeTimedOut(ws), HANDSHAKE_TIMEOUT_MS);
  }

  // A first connect fails with the reason; a reconnect tries again later. Closed as lost
  // at once: a silent peer never answers the closing handshake either.
  handshakeTimedOut(ws) {
    if (ws !== this.ws || !this.target || this.state === "connected") return;
    if (!this.everConnected) {
      const shown = withoutCredentials(this.target.url);
      this.fail(new GatewayError({ code: "UNREACHABLE", message: `No answer from ${shown} within ${HANDSHAKE_TIMEOUT_MS / 1000} s.` }));
    }
    ws.close();
    this.onClose(ws, { code: 1006, reason: "" });
  }

  onMessage(ws, message) {
    if (ws === this.ws) this.lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return;
    }
    if (frame.type === "res") {
      const waiter = this.pending.get(frame.id);
      if (!waiter) return;
      this.pending.delete(frame.id);
      if (frame.ok) waiter.resolve(frame.payload);
      else waiter.reject(new GatewayError(frame.error || {}));
      return;
    }
    if (frame.type !== "event") return;
    if (frame.event === "connect.challenge") {
      // One connect a socket: the gateway refuses a second, and the page would give up a
      // working connection over a challenge sent again by a broken or hostile peer.
      if (this.challenged.has(ws)) return;
      this.challenged.add(ws);
      this.handshake(ws);
      return;
    }
    this.dispatchEvent(new CustomEvent(frame.event, { detail: frame.payload }));
  }

  async handshake(ws) {
    const { auth } = this.target || {};
    try {
      const hello = await this.send(ws, "connect", {
        minProtocol: 3,
        maxProtocol: 4,
        client: CLIENT,
        role: "operator",
        scopes: SCOPES,
        auth,
      });
      if (ws !== this.ws) return;
      clearTimeout(this.handshakeTimer);
      this.watch(ws, hello);
      this.hello = hello;
      this.everConnected = true;
      this.attempt = 0;
      this.setState("connected");
      this.dispatchEvent(new CustomEvent("hello", { detail: hello }));
      this.settle(null, hello);
    } catch (thrown) {
      if (ws !== this.ws) return;
      const error = thrown instanceof GatewayError ? thrown : new GatewayError({ message: String(thrown) });
      // A gateway that took this credential before and turns it away for now is asked again
      // (the close schedules it); a refused credential will be refused again: stop.
      if (this.everConnected && error.isTemporary) {
        this.retryAfterMs = error.retryAfterMs || 0;
        ws.close();
        return;
      }
      this.fail(error);
      ws.close();
    }
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    clearTimeout(this.handshakeTimer);
    clearInterval(this.watchdog);
    this.ws = null;
    this.rejectPending("lost");
    if (!this.target) return;
    if (!this.everConnected) {
      const reason = event.reason ? ` (${event.reason})` : "";
      const shown = withoutCredentials(this.target.url);
      this.fail(new GatewayError({ code: "UNREACHABLE", message: `Could not connect to ${shown}${reason}.` }));
      return;
    }
    const delay = Math.max(this.retryAfterMs, Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.attempt));
    this.retryAfterMs = 0;
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState("waiting", { delay, closeCode: event.code, reason: event.reason });
    this.timer = setTimeout(() => {
      if (this.target) this.open();
    }, delay);
  }

  watch(ws, hello) {
    const asked = Number(hello && hello.policy && hello.policy.tickIntervalMs);
    const silence = MISSED_TICKS * Math.min(TICK_MAX_MS, Math.max(TICK_MIN_MS, asked || TICK_DEFAULT_MS));
    this.lastHeard = Date.now();
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (ws !== this.ws || Date.now() - this.lastHeard <= silence) return;
      ws.close(4000, "tick timeout");
      this.onClose(ws, { code: 4000, reason: "tick timeout" }); // a silent peer never closes
    }, silence / 4);
  }

  fail(error) {
    clearTimeout(this.handshakeTimer); // the socket closes after this: no second failure
    this.target = null;
    this.lastError = error;
    this.setState("failed", { error });
    this.settle(error, null);
  }

  settle(error, hello) {
    const first = this.firstResult;
    this.firstResult = null;
    if (!first) {
      if (error) this.dispatchEvent(new CustomEvent("failed", { detail: error }));
      return;
    }
    if (error) first.reject(error);
    else first.resolve(hello);
  }

  // A poll's answer that comes after the timeout finds no waiter and is dropped; any other
  // request is waited for until answered or the connection is lost.
  send(ws, method, params, poll = false) {
    const id = `ui-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const waiter = { method, slow: false };
      const timer = setTimeout(() => {
        if (this.pending.get(id) !== waiter) return;
        if (poll) {
          this.pending.delete(id);
          reject(new GatewayError({ code: "TIMEOUT", message: `The gateway did not answer ${method} within ${REQUEST_TIMEOUT_MS / 1000} s.` }));
          return;
        }
        waiter.slow = true;
        this.reportSlow();
      }, REQUEST_TIMEOUT_MS);
      const done = (settle) => (value) => {
        clearTimeout(timer);
        if (waiter.slow) {
          waiter.slow = false;
          this.reportSlow();
        }
        settle(value);
      };
      waiter.resolve = done(resolve);
      waiter.reject = done(reject);
      this.pending.set(id, waiter);
      ws.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  reportSlow() {
    this.dispatchEvent(new CustomEvent("slow", { detail: { methods: this.slowMethods() } }));
  }

  rejectPending(why) {
    const message = why === "lost" ? "The connection to the gateway was lost." : "Disconnected.";
    for (const waiter of this.pending.values()) {
      waiter.reject(new GatewayError({ code: "DISCONNECTED", message }));
    }
    this.pending.clear();
  }

  setState(state, info = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...info } }));
  }
}

// A URL to show: `ws://user:password@host` puts a credential where anyone who sees the
// screen reads it. One the browser cannot parse loses everything up to its last `@`.
function withoutCredentials(url) {
  try {
    const parsed = new URL(url);
    if (!parsed.username && !parsed.password) return url;
    parsed.username = "";
    parsed.password = "";
    return parsed.href;
  } catch {
    return url.replace(/^([^:/?#]*:\/\/).*@/s, "$1");
  }
}

// An id for idempotency keys; crypto.randomUUID exists only in secure contexts (not on a
// plain-http LAN address), getRandomValues everywhere.
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
