"""`scripts/bench --scale`: what the shared PostgreSQL store and `--workers` cost
and give, as two ratios from one run on this machine.

- JSON requests/s of `clawgate run --workers 2` over `--workers 1`, both on the postgres store
  (target ≥ 1.6×): the kernel spreads connections over the workers (SO_REUSEPORT);
- CPU per turn of one gateway process on the postgres store over one on the sqlite store, the
  same load (target ≤ 1.3×). The gateway's own CPU (its SQLite thread included) is the ratio;
  the PostgreSQL server's CPU per turn is reported beside it, not in it.

A real PostgreSQL (Debian's package, tests/support/pgserver.py) in a temporary data dir; the
echo agent; keyless JSON requests, so every request is a turn on a session of its own (no
session waits for another's lock). The three gateways run side by side and take the load in
turns, window after window (medians of the rounds). The load client, the database and the
gateways share the machine's cores: requests/s are a floor, and with 2 cores a second worker
competes with the client and the database for them; the run prints, beside the measured ratio,
what CPU alone predicts for it (the cores over the gateway, database and client CPU of a turn,
against one worker's one core); a single worker that does not fill its core measures above it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench import (
    ROOT,
    Cell,
    Child,
    Children,
    Plan,
    chat_request,
    clean_env,
    drive,
    free_port,
    gateway_config,
    merged,
    wait_listening,
)

sys.path.insert(0, str(ROOT))
from tests.support.pgserver import PASSWORD, PgServer, find_bindir

TARGET_WORKERS_RPS_RATIO = 1.6
TARGET_POSTGRES_CPU_RATIO = 1.3
CONCURRENCY = 64
QUICK_ROUNDS = 3
FULL_ROUNDS = 5

QUICK = Plan(
    "quick", warmup_s=1.0, window_s=3.0, max_requests=100_000, chunk_window_s=0, ws_turn_window_s=0,
    idle_sockets=(), idle_budget_s=0, settle_s=0, stored_sessions=0, store_turns=0,
)  # fmt: skip
FULL = Plan(
    "full", warmup_s=2.0, window_s=10.0, max_requests=1_000_000, chunk_window_s=0,
    ws_turn_window_s=0, idle_sockets=(), idle_budget_s=0, settle_s=0, stored_sessions=0,
    store_turns=0,
)  # fmt: skip


class ProcessTree(Child):
    """A supervisor and its workers: CPU is the sum over the supervisor and its children."""

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [self.pid, *(int(p) for p in children.read_text().split())]
        except OSError:
            return [self.pid]

    def cpu_seconds(self, *, loop_thread: bool = False) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def cpu_sample(self) -> dict[str, float]:
        return {self.name: self.cpu_seconds()}


def start(
    children: Children, tmp: Path, name: str, store: dict[str, Any], workers: int = 1
) -> tuple[Child, str]:
    home = tmp / f"{name}-home"
    home.mkdir(exist_ok=True)
    config = gateway_config(None)
    config["store"] = store
    path = tmp / f"{name}.json5"
    path.write_text(json.dumps(config, indent=1))
    port = free_port()
    args = [sys.executable, "-m", "gateway", "run", "--config", str(path)]
    args += ["--state-dir", str(tmp / f"{name}-state"), "--port", str(port)]
    env = clean_env(home)
    env["CLAWGATE_BENCH_DB_PASSWORD"] = PASSWORD
    kind = ProcessTree if workers > 1 else Child
    if workers > 1:
        args += ["--workers", str(workers)]
    child = children.add(kind(name, args, tmp / f"{name}.log", env, stdout=False))
    wait_listening(child, port)
    if workers > 1:
        time.sleep(2)  # every worker is listening, not only the first
    return child, f"http://127.0.0.1:{port}"


class PgCpu:
    """CPU of the PostgreSQL server: the postmaster and its backends."""

    def __init__(self, server: PgServer) -> None:
        pid_line = (server.data / "postmaster.pid").read_text().split("\n", 1)[0]
        self.tree = ProcessTree.__new__(ProcessTree)
        self.tree.pid = int(pid_line)

    def seconds(self) -> float:
        return self.tree.cpu_seconds()


async def measure(
    plan: Plan, rounds: int, tmp: Path, server: PgServer, children: Children
) -> dict[str, Any]:
    """The three gateways run side by side and take the load in turns, window after window,
    `rounds` times: a neighbour's burst on this machine then falls on all three alike, and
    each ratio is the median of the rounds' ratios."""
    server.admin("CREATE DATABASE bench TEMPLATE template0")
    postgres = {
        "backend": "postgres",
        "url": server.url_without_password("bench"),
        "password": "${CLAWGATE_BENCH_DB_PASSWORD}",
    }
    pg_cpu = PgCpu(server)
    cells = {
        "sqlite_1": start(children, tmp, "gw-sqlite", {"backend": "sqlite"}),
        "postgres_1": start(children, tmp, "gw-pg-1", postgres),
        "postgres_2": start(children, tmp, "gw-pg-2", postgres, workers=2),
    }
    windows: dict[str, list[tuple[Cell, float]]] = {name: [] for name in cells}
    for _ in range(rounds):
        for name, (child, url) in cells.items():
            request = chat_request(url, None, "openclaw", "hello there", False)
            db0 = pg_cpu.seconds()
            cell = await drive(request, CONCURRENCY, plan, [child], plan.window_s, children)
            windows[name].append((cell, pg_cpu.seconds() - db0))

    def per_turn(cell: Cell, seconds: float) -> float:
        return seconds * 1000 / max(cell.requests, 1)

    def rps(cell: Cell) -> float:
        return cell.requests / cell.seconds if cell.seconds else 0.0

    results: dict[str, Any] = {}
    for name, measured in windows.items():
        child = cells[name][0]
        summary = merged([cell for cell, _ in measured]).summary()
        summary["gateway_cpu_ms_per_turn"] = round(
            median(per_turn(cell, cell.cpu[child.name]) for cell, _ in measured), 3
        )
        summary["postgres_server_cpu_ms_per_turn"] = round(
            median(per_turn(cell, db) for cell, db in measured), 3
        )
        summary["client_cpu_ms_per_turn"] = round(
            median(per_turn(cell, cell.client_cpu) for cell, _ in measured), 3
        )
        summary["rps_by_round"] = [round(rps(cell), 1) for cell, _ in measured]
        results[name] = summary
    by_round = list(zip(*windows.values(), strict=True))
    rps_ratio = median(rps(pg2) / max(rps(pg1), 1e-9) for _, (pg1, _), (pg2, _) in by_round)
    cpu_ratio = median(
        per_turn(pg1, pg1.cpu["gw-pg-1"]) / max(per_turn(lite, lite.cpu["gw-sqlite"]), 1e-9)
        for (lite, _), (pg1, _), _ in by_round
    )
    # What CPU alone allows: n workers serve at most n cores' worth of their turns, and all
    # share the machine's cores with the database server and the load client. The second
    # ceiling takes the client as free (the load generated on another machine).
    cores = os.cpu_count() or 1

    def most_rps(cell: dict[str, Any], workers: int, client: bool) -> float:
        gateway = cell["gateway_cpu_ms_per_turn"]
        everything = gateway + cell["postgres_server_cpu_ms_per_turn"]
        everything += cell["client_cpu_ms_per_turn"] if client else 0.0
        return min(workers / gateway, cores / everything) if gateway else 0.0

    one, two = results["postgres_1"], results["postgres_2"]
    ceiling, ceiling_free_client = (
        most_rps(two, 2, client) / max(most_rps(one, 1, client), 1e-9) for client in (True, False)
    )
    results["ratios"] = {
        "workers2_over_workers1_rps": round(rps_ratio, 2),
        "workers2_target": TARGET_WORKERS_RPS_RATIO,
        "workers2_met": rps_ratio >= TARGET_WORKERS_RPS_RATIO,
        "workers2_cpu_ceiling_on_this_machine": round(ceiling, 2),
        "workers2_cpu_ceiling_with_a_free_load_client": round(ceiling_free_client, 2),
        "postgres_over_sqlite_gateway_cpu_per_turn": round(cpu_ratio, 2),
        "postgres_cpu_target": TARGET_POSTGRES_CPU_RATIO,
        "postgres_cpu_met": cpu_ratio <= TARGET_POSTGRES_CPU_RATIO,
        "rounds": rounds,
    }
    return results


def run(quick: bool, output: Path) -> int:
    bindir = find_bindir()
    if bindir is None:
        print(
            "scripts/bench --scale needs PostgreSQL: apt-get install -y postgresql", file=sys.stderr
        )
        return 1
    plan = QUICK if quick else FULL
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    children = Children()
    server = PgServer(bindir)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="clawgate-bench-scale-") as tmp:
            results = asyncio.run(measure(plan, rounds, Path(tmp), server, children))
    finally:
        children.stop_all()
        server.stop()
    results["meta"] = {
        "plan": plan.name,
        "cpus": os.cpu_count(),
        "concurrency": CONCURRENCY,
        "note": "load client, PostgreSQL and the gateways share the machine's cores",
    }
    output.write_text(json.dumps(results, indent=1) + "\n")
    r = results["ratios"]
    print(
        f"clawgate scale-out ({plan.name}, {os.cpu_count()} cores, keyless JSON turns, echo,"
        f" medians of {rounds} rounds of alternating windows):"
    )
    for name in ("sqlite_1", "postgres_1", "postgres_2"):
        cell = results[name]
        print(
            f"  {name:11} {cell['rps']:8.1f} req/s  gateway {cell['gateway_cpu_ms_per_turn']:.3f}"
            f" ms CPU/turn  postgres server {cell['postgres_server_cpu_ms_per_turn']:.3f} ms/turn"
            f"  load client {cell['client_cpu_ms_per_turn']:.3f} ms/turn  errors {cell['errors']}"
        )
    print(
        f"  --workers 2 / 1 req/s: {r['workers2_over_workers1_rps']}x"
        f" (target >= {TARGET_WORKERS_RPS_RATIO}x: {'met' if r['workers2_met'] else 'NOT met'});"
        f" what this machine's CPU predicts: {r['workers2_cpu_ceiling_on_this_machine']}x,"
        f" {r['workers2_cpu_ceiling_with_a_free_load_client']}x with the load generated elsewhere"
    )
    cpu_ratio, met = r["postgres_over_sqlite_gateway_cpu_per_turn"], r["postgres_cpu_met"]
    print(
        f"  postgres / sqlite gateway CPU per turn: {cpu_ratio}x"
        f" (target <= {TARGET_POSTGRES_CPU_RATIO}x: {'met' if met else 'NOT met'})"
    )
    print(f"(results in {output})")
    return 0
