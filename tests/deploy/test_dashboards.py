"""The Grafana dashboards: JSON Grafana provisions, panels that are laid out and sourced, and
PromQL that parses and reads only the metrics of the catalogue (docs/observability.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmp_stack import deployfiles, monitoring

ROOT = deployfiles.repository_root()
DASHBOARDS = ROOT / monitoring.DASHBOARDS
PROVISIONED_SOURCE = "dmp-prometheus"
GRID_COLUMNS = 24
# What Grafana puts in place of its variables, for promtool to parse the expressions.
SUBSTITUTES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$service": ".*"}


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


BOARDS = {path.name: load(path) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (f"{p['title']}/{t['refId']}", t["expr"])
        for p in panels(board)
        for t in p.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["query"]["query"])
            assert match, variable["name"]
            found.append((f"${variable['name']}", match[1]))
    return found


def test_the_three_dashboards_are_there() -> None:
    assert set(BOARDS) == {"request-path.json", "event-path.json", "audit-log.json"}
    uids = [b["uid"] for b in BOARDS.values()]
    titles = [b["title"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for board in BOARDS.values():
        assert "dmp" in board["tags"]
        assert board["editable"] is False  # provisioned: changed in the repository only


@pytest.mark.parametrize("name", list(BOARDS))
def test_every_panel_has_a_title_a_source_and_queries(name: str) -> None:
    board = BOARDS[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    sources = {PROVISIONED_SOURCE}
    if "datasource" in variables:
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        sources.add("${datasource}")
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(board):
        assert panel["title"].strip(), panel["id"]
        if panel["type"] == "row":
            continue
        where = f"{name}: {panel['title']}"
        assert panel["datasource"]["type"] == "prometheus", where
        assert panel["datasource"]["uid"] in sources, where
        assert panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], where
        used = set(re.findall(r"\$\{?(\w+)", json.dumps(panel["targets"])))
        assert used - {"__rate_interval", "__range", "__interval"} <= set(variables), where


@pytest.mark.parametrize("name", list(BOARDS))
def test_the_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in BOARDS[name]["panels"]:  # top level: rows' panels are laid out inside them
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{name}: {panel['title']} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("name", list(BOARDS))
def test_the_queries_read_only_catalogued_metrics(name: str) -> None:
    known = monitoring.known_series((ROOT / monitoring.DOCUMENTATION).read_text())
    for where, expr in queries(BOARDS[name]):
        used = monitoring.metric_names(expr)
        assert used, (where, expr)
        unknown = {n for n in used if not monitoring.is_known(n, known)}
        assert not unknown, (where, unknown)


def test_every_metric_of_the_catalogue_is_on_a_dashboard() -> None:
    catalogue = monitoring.catalogue((ROOT / monitoring.DOCUMENTATION).read_text())
    assert len(catalogue) > 20  # the tables were read
    shown = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for board in BOARDS.values()
        for _, expr in queries(board)
        for name in monitoring.metric_names(expr)
    }
    assert set(catalogue) - shown == set()


def test_the_queries_parse(tmp_path: Path) -> None:
    """promtool parses each expression, as a recording rule, with Grafana's variables
    replaced by what Grafana would put there."""
    rules = []
    for name, board in BOARDS.items():
        for i, (where, expr) in enumerate(queries(board)):
            text = expr
            for variable, value in SUBSTITUTES.items():
                text = text.replace(variable, value)
            assert "$" not in text, (name, where)
            rules.append(
                {"record": f"dashboard:{Path(name).stem.replace('-', '_')}:{i}", "expr": text}
            )
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = deployfiles.run([deployfiles.promtool(), "check", "rules", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_metric_name_reader_is_not_fooled() -> None:
    """What the catalogue check relies on: label names, functions, durations, strings and
    Grafana variables are not metric names."""
    expr = (
        "histogram_quantile(0.99, sum by (method, le) (rate(dmp_rpc_request_duration_seconds_bucket"
        '{job=~"$service", code!="OK"}[$__rate_interval]))) > 1e3 and on (job) '
        "up offset 5m unless ignoring (instance) bogus_metric"
    )
    assert monitoring.metric_names(expr) == {
        "dmp_rpc_request_duration_seconds_bucket",
        "up",
        "bogus_metric",
    }
