"""deploy/grafana/relay.json: a current Grafana schema, the data source a variable chosen at
import (never a data source's uid written in), every panel and query through it, filtered
by the job and instance variables, valid PromQL, and every metric of the README's table
on some panel."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml

from tests.deploy.files import (
    as_promql,
    dashboard,
    dashboard_queries,
    metric_names,
    panels,
)
from tests.harness import ROOT

THROUGH_VARIABLE = {"type": "prometheus", "uid": "${datasource}"}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every key of every mapping in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def test_the_schema_is_a_current_grafanas():
    assert dashboard()["schemaVersion"] >= 39


def test_the_data_source_is_a_prometheus_variable_with_nothing_chosen_in_advance():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    assert not source.get("current"), "a data source chosen here is one of the author's"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == THROUGH_VARIABLE


def test_every_panel_and_query_goes_through_the_data_source_variable():
    board = dashboard()
    for panel in panels(board):
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["datasource"] == THROUGH_VARIABLE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == THROUGH_VARIABLE, panel["title"]


def test_no_uid_of_a_data_source_is_written_anywhere():
    for path, key, value in walk(dashboard()):
        if key == "datasource" and not isinstance(value, str):
            assert value in (THROUGH_VARIABLE, None) or value.get("uid") == "${datasource}", path
        if key == "uid" and path:  # the dashboard's own uid is at the top
            assert value == "${datasource}", f"{path}: uid {value!r}"


def test_every_selector_of_a_panel_is_filtered_by_job_and_instance():
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            selectors = re.findall(r"relay_\w+(\{[^}]*\})?", expr)
            assert selectors, expr
            for labels in selectors:
                assert 'job=~"$job"' in labels and 'instance=~"$instance"' in labels, expr


def test_the_panels_do_not_overlap():
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in taken, f"{panel['title']} over {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def readme_metrics() -> set[str]:
    """The metrics of the README's Observability table (first column)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| metric | labels |", 1)[1].split("\n\n", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines()[2:]]
    return {name for cell in first_cells for name in re.findall(r"`(relay_\w+)", cell)}


def test_every_metric_relay_documents_is_on_the_dashboard():
    shown = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for query in dashboard_queries(dashboard())
        for name in metric_names(query)
    }
    documented = readme_metrics()
    assert len(documented) >= 25
    assert documented - shown == set()


def test_every_panel_query_is_promql_that_promtool_parses(promtool, tmp_path):
    board = dashboard()
    queries = [t["expr"] for panel in panels(board) for t in panel["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(query)}
                    for i, query in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", "queries.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout
