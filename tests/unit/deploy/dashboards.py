"""The PromQL of the provisioned Grafana dashboards, as Prometheus can run it.

Grafana substitutes template variables before a query reaches Prometheus; here
each becomes what "All" sends (``.*``) and ``$__rate_interval`` a fixed window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # as Prometheus receives it


def expand(expr: str, variables: list[str]) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = re.sub(rf"\$(?:{re.escape(name)}\b|\{{{re.escape(name)}\}})", ".*", expr)
    return expr


def dashboards() -> dict[str, dict[str, object]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[PanelQuery]:
    found = []
    for name, board in dashboards().items():
        templating = board.get("templating", {})
        assert isinstance(templating, dict)
        variables = [v["name"] for v in templating.get("list", [])]
        panels = board.get("panels", [])
        assert isinstance(panels, list)
        for panel in panels:
            for target in panel.get("targets", []):
                expr = expand(target["expr"], variables)
                found.append(PanelQuery(name, panel["title"], target["refId"], expr))
    return found


def recording_rules(queries: list[PanelQuery]) -> dict[str, object]:
    """Every query as a recording rule, so ``promtool check rules`` parses it."""
    rules = [
        {"record": f"dashboard:query_{number}", "expr": query.expr}
        for number, query in enumerate(queries)
    ]
    return {"groups": [{"name": "grafana-panels", "rules": rules}]}
