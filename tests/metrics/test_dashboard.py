"""conf/grafana-clawgate.json asks only for metrics a scrape has, and shows every one of ours."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.metrics import AUTH, MetricsGateway

DASHBOARD = Path(__file__).parents[2] / "conf" / "grafana-clawgate.json"
# A metric name in PromQL: ours and the process collector's. Label names and functions
# never start with these prefixes.
METRIC_RE = re.compile(r"\b(?:clawgate|process)_[a-z_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


async def scraped_names(gateway: MetricsGateway) -> dict[str, str]:
    """Every series name a scrape can carry -> its family, labelled families with no
    series yet included (their `# TYPE` line names them)."""
    response = await gateway.client.get("/metrics", headers=AUTH)
    names = {}
    for family in text_string_to_metric_families(await response.text()):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


async def test_every_metric_the_dashboard_queries_is_in_a_scrape(
    gateway: MetricsGateway,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in expressions(dashboard) for name in METRIC_RE.findall(expr)}
    names = await scraped_names(gateway)
    assert used, "the dashboard queries nothing"
    assert sorted(used - set(names)) == []


async def test_the_dashboard_shows_every_clawgate_metric(gateway: MetricsGateway) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in expressions(dashboard) for name in METRIC_RE.findall(expr)}
    names = await scraped_names(gateway)
    ours = {family for family in names.values() if family.startswith("clawgate_")}
    shown = {names[name] for name in used if name in names}
    assert sorted(ours - shown) == []
