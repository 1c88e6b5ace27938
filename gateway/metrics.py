"""The gateway's Prometheus metrics: one `CollectorRegistry` per app, and what feeds it.

Counters and histograms are updated where the event happens, at most once per request, run,
commit, failed authentication or reload: never per streamed chunk. What is state rather than
an event (open WebSockets, live sessions, runs in flight) is read from the state objects when
scraped (`LiveCollector`), so no code path has to keep a gauge in step.

Every label value comes from a bounded set: agent and provider ids from the config, outcomes,
kinds, reasons and results from fixed tuples below, HTTP routes from the router's resources
(gateway/metrics_http.py). Never a session key, a path or anything else a client chose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.errors import (
    AgentError,
    MalformedStream,
    RunTimedOut,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from agents.events import LifecyclePhase, RunEvent, SessionChange, Stream
from agents.runs import RunOutcome

# The text format `generate_latest` writes. prometheus_client's CONTENT_TYPE_LATEST names
# version 1.0.0 in recent releases, which is not what that function produces.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RELOAD_RESULTS = ("success", "failure")

# Seconds. A run is a whole model answer: from a fraction of a second (echo, a cached
# answer) to the minutes of a long generation.
RUN_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Time to first token: what a chat user waits for; most upstreams answer within seconds.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
# One SQLite write transaction with synchronous=FULL: an fsync, so a millisecond on an SSD,
# tens on a disk or a busy VM.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def upstream_kind(error: UpstreamError) -> str:
    """The `kind` label: one word per class of agents/errors.py (and 4xx/5xx apart)."""
    match error:
        case UpstreamTimeout():
            return "timeout"
        case UpstreamRateLimited():
            return "rate_limited"
        case UpstreamAuthFailed():
            return "auth"
        case UpstreamStatusError(status=status):
            return "server_error" if status >= 500 else "client_error"
        case MalformedStream():
            return "malformed"
    return "connection"  # refused, reset, DNS, TLS; or a provider missing from the config


@attrs.frozen
class LiveCounts:
    """What is open or running at the moment of a scrape."""

    ws_connections: int  # every open WebSocket, in its handshake or past it
    ws_authenticated: int
    sessions_live: int  # session objects in memory (agents.registry's LRU)
    runs_running: int
    runs_queued: int


# The streams `on_run_event` tells apart, once per run event: on Python 3.11 reading a member
# off the enum class (`Stream.ASSISTANT`) costs 0.2-0.3 µs, a module global a tenth of it.
_ASSISTANT, _USAGE, _LIFECYCLE = Stream.ASSISTANT, Stream.USAGE, Stream.LIFECYCLE

_LIVE_GAUGES = (
    ("clawgate_ws_connections", "Open WebSocket connections, authenticated or not."),
    ("clawgate_ws_connections_authenticated", "Open WebSocket connections past the handshake."),
    ("clawgate_sessions_live", "Sessions held in memory."),
    ("clawgate_runs_in_flight", "Runs queued or running, by state."),
)


class LiveCollector(Collector):
    """Gauges read at scrape time; `read` returns None while the gateway is not serving."""

    def __init__(self, read: Callable[[], LiveCounts | None]) -> None:
        self.read = read

    def describe(self) -> Iterable[Metric]:
        # Names only: the registry checks them for duplicates at registration, before the
        # state exists.
        return [GaugeMetricFamily(name, doc) for name, doc in _LIVE_GAUGES]

    def collect(self) -> Iterable[Metric]:
        counts = self.read()
        if counts is None:
            return []
        (connections, authenticated, sessions, runs) = (
            GaugeMetricFamily(name, doc, labels=["state"] if name.endswith("flight") else None)
            for name, doc in _LIVE_GAUGES
        )
        connections.add_metric([], counts.ws_connections)
        authenticated.add_metric([], counts.ws_authenticated)
        sessions.add_metric([], counts.sessions_live)
        runs.add_metric(["running"], counts.runs_running)
        runs.add_metric(["queued"], counts.runs_queued)
        return [connections, authenticated, sessions, runs]


# Finds the run of a terminal event, for its error: (run id, session key) -> outcome.
OutcomeLookup = Callable[[str, str], RunOutcome | None]


class GatewayMetrics:
    """The metrics of one gateway app, in a registry of their own (tests run several apps in
    one process; the global default registry would add their counts together)."""

    def __init__(self) -> None:
        # The text format writes each counter's and histogram's creation time as a gauge of
        # its own (`*_created`): twice the series for nothing a dashboard uses. The switch is
        # process-wide, and this is the process's only use of prometheus_client.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "clawgate_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.runs = Counter(
            "clawgate_runs", "Runs ended, by agent and outcome.", ["agent", "outcome"],
            registry=registry,
        )  # fmt: skip
        self.run_duration = Histogram(
            "clawgate_run_duration_seconds",
            "From a run's start (session loaded) to its end, by agent.",
            ["agent"],
            buckets=RUN_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "clawgate_run_time_to_first_token_seconds",
            "From a run's start to its first assistant text, by agent.",
            ["agent"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "clawgate_tokens",
            "Tokens of runs that ended without failing (as the provider reported them, else"
            " estimated), by agent and direction (input, output).",
            ["agent", "direction"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "clawgate_upstream_errors",
            "Runs failed by their upstream provider, by provider and kind.",
            ["provider", "kind"],
            registry=registry,
        )
        self.store_commit = Histogram(
            "clawgate_store_commit_seconds",
            "Session store write transactions, BEGIN to COMMIT.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "clawgate_auth_failures",
            "Failed authentications (HTTP, WebSocket, hooks), by reason"
            " (missing, mismatch, locked_out).",
            ["reason"],
            registry=registry,
        )
        self.reloads = Counter(
            "clawgate_config_reloads",
            "Configs applied (file reload, SIGHUP, config.patch) or refused, by result.",
            ["result"],
            registry=registry,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)  # both series from the start: rate() needs a zero
        ProcessCollector(registry=registry)  # process_*: memory, CPU, open files
        self._outcome_of: OutcomeLookup | None = None
        # Labelled children looked up in a plain dict, not through `labels()` (its validation
        # and lock cost several times the increment itself); bounded as the labels are:
        # routes times statuses, agents times directions or outcomes.
        self._series: dict[tuple[Counter | Histogram, tuple[str, ...]], Any] = {}
        # perf_counter at lifecycle start, by (run id, session key): of every run until its
        # end, and of those whose first assistant text is still to come.
        self._started: dict[tuple[str, str], float] = {}
        self._awaiting_text: dict[tuple[str, str], float] = {}
        # A run's tokens (its usage event), counted when it ends without failing: a failed
        # run's are an estimate of a context no model may have read (an upstream that
        # refused it, a connection that never opened), whose count would only mislead.
        self._usage: dict[tuple[str, str], tuple[int, int]] = {}

    def watch_live(self, read: Callable[[], LiveCounts | None]) -> None:
        self.registry.register(LiveCollector(read))

    def watch_outcomes(self, lookup: OutcomeLookup | None) -> None:
        self._outcome_of = lookup

    # -- events ------------------------------------------------------------------------

    def request_done(self, route: str, status: int) -> None:
        self._child(self.http_requests, route, str(status)).inc()

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, made once and kept."""
        key = (metric, labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def auth_failed(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def store_committed(self, seconds: float) -> None:
        self.store_commit.observe(seconds)  # on the store thread: prometheus_client locks

    def reload_applied(self, _result: Any) -> None:
        self.reloads.labels("success").inc()

    def reload_failed(self, _issues: list[str]) -> None:
        self.reloads.labels("failure").inc()

    def on_run_event(self, event: RunEvent | SessionChange) -> None:
        """The registry listener: every run event of every run passes here, so an assistant
        delta costs one comparison, or a dict lookup while a run still awaits its first."""
        if type(event) is not RunEvent:
            return
        stream = event.stream
        if stream == _ASSISTANT:
            if self._awaiting_text:
                started = self._awaiting_text.pop((event.run_id, event.session_key), None)
                if started is not None:
                    self._child(self.time_to_first_token, event.agent_id).observe(
                        time.perf_counter() - started
                    )
        elif stream == _USAGE:
            data = event.data
            run = (event.run_id, event.session_key)
            self._usage[run] = (data["inputTokens"], data["outputTokens"])
        elif stream == _LIFECYCLE:
            self._lifecycle(event)

    def _lifecycle(self, event: RunEvent) -> None:
        phase = event.data.get("phase")
        run = (event.run_id, event.session_key)
        match phase:
            case LifecyclePhase.START:
                self._started[run] = self._awaiting_text[run] = time.perf_counter()
                return
            case LifecyclePhase.END:
                outcome = "aborted" if event.data.get("aborted") else "completed"
            case LifecyclePhase.ERROR:
                outcome = "failed"
                self._count_upstream_error(event)
            case _:
                return
        agent = event.agent_id
        self._awaiting_text.pop(run, None)
        usage = self._usage.pop(run, None)
        if usage is not None and outcome != "failed":
            self._child(self.tokens, agent, "input").inc(usage[0])
            self._child(self.tokens, agent, "output").inc(usage[1])
        started = self._started.pop(run, None)
        if started is not None:
            self._child(self.run_duration, agent).observe(time.perf_counter() - started)
        self._child(self.runs, agent, outcome).inc()

    def _count_upstream_error(self, event: RunEvent) -> None:
        found = self._outcome_of(event.run_id, event.session_key) if self._outcome_of else None
        if found is None:
            return
        error: AgentError | None = found.error
        # A run past its own deadline failed, but not by its provider: the deadline may be
        # one a client chose (chat.send's timeoutMs), which would make any provider look bad.
        if (
            isinstance(error, UpstreamError)
            and not isinstance(error, RunTimedOut)
            and found.provider is not None
        ):
            self.upstream_errors.labels(found.provider, upstream_kind(error)).inc()
