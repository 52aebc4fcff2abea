"""The deploy/ files as their tests read them: the alert rules, the dashboard, and the
PromQL expressions in both with the relay metrics they name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import yaml

from tests.harness import ROOT

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "relay-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "relay-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "relay.json"

#: a relay metric in PromQL: an identifier starting relay_ (label values such as
#: job="relay-web" have no underscore after relay, and no other name starts so)
_METRIC = re.compile(r"(?<![\w:])relay_[a-zA-Z0-9_]*")

#: what Grafana puts in place of its variables, for a query Prometheus can parse
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict:
    loaded: dict = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict) -> Iterator[dict]:
    """Every panel, those inside rows included; rows themselves left out."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries(board: dict) -> list[str]:
    """The PromQL of every panel's targets and of the query variables."""
    queries = [target["expr"] for panel in panels(board) for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def as_promql(query: str) -> str:
    """A dashboard query with its Grafana variables replaced, as Grafana sends it."""
    for name, value in _GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    return query


def metric_names(query: str) -> set[str]:
    """The relay series a PromQL expression names (``_bucket``, ``_total``… as written)."""
    return set(_METRIC.findall(query))


def named_metrics() -> set[str]:
    """Every relay series named by the alert rules and the dashboard."""
    queries = [rule["expr"] for rule in alerts()] + dashboard_queries(dashboard())
    return {name for query in queries for name in metric_names(query)}
