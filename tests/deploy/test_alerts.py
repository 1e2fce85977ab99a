"""The alerting rules: valid for promtool, unit-tested both ways, one source for compose and
Kubernetes, documented, and reading only the metrics of the catalogue."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmp_stack import deployfiles, monitoring

ROOT = deployfiles.repository_root()
RULES_DIR = ROOT / monitoring.ALERTS.parent
SEVERITIES = {"critical", "warning"}


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    # Required, never skipped: .ci/run installs Debian's prometheus package when it is missing.
    return deployfiles.run([deployfiles.promtool(), *args], cwd=cwd)


def rules_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / monitoring.ALERTS).read_text())
    return loaded


def alert_tests() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / monitoring.ALERT_TESTS).read_text())
    return loaded


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rules_file()["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", monitoring.ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", monitoring.ALERT_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    """A quiet case is a whole situation (a test group) in which the alert never fires: not
    merely a moment before its `for` has run out."""
    tests = alert_tests()
    assert tests["rule_files"] == [monitoring.ALERTS.name]
    for alert in alerts():
        name = alert["alert"]
        groups = [
            [c for c in group.get("alert_rule_test", []) if c["alertname"] == name]
            for group in tests["tests"]
        ]
        assert any(c.get("exp_alerts") for g in groups for c in g), f"{name}: never fires"
        assert any(g and not any(c.get("exp_alerts") for c in g) for g in groups), (
            f"{name}: no situation where it stays quiet"
        )


def mutated(tmp_path: Path, name: str, expr: str) -> subprocess.CompletedProcess[str]:
    """The unit tests of `name` run against the rules with its expression replaced.

    Only the test groups that check `name` are run: a group's verdict rests on the alerts it
    names alone, so the others cannot notice the change, and promtool evaluates every rule at
    every step of every group it is given (the whole file is about 7 s; this alert's groups,
    one or two seconds)."""
    rules = rules_file()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = expr
    (tmp_path / monitoring.ALERTS.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = alert_tests()
    tests["tests"] = [
        group
        for group in tests["tests"]
        if any(case["alertname"] == name for case in group.get("alert_rule_test", []))
    ]
    assert tests["tests"], f"{name}: no test group checks it"
    (tmp_path / monitoring.ALERT_TESTS.name).write_text(yaml.safe_dump(tests, sort_keys=False))
    return promtool("test", "rules", monitoring.ALERT_TESTS.name, cwd=tmp_path)


@pytest.mark.parametrize("name", [a["alert"] for a in alerts()])
def test_the_unit_tests_notice_an_alert_that_never_or_always_fires(
    tmp_path: Path, name: str
) -> None:
    """Each case matters: an alert that cannot fire fails a firing case, and one that always
    fires fails a quiet case (a failure that expected no alert)."""
    never = mutated(tmp_path, name, "vector(1) < 0")
    assert never.returncode != 0
    assert f"alertname: {name}," in never.stdout + never.stderr
    always = mutated(tmp_path, name, "vector(1)")
    assert always.returncode != 0
    quiet_case_failed = re.compile(rf"alertname: {name}, time: [^,]+,\s*exp:\[\],")
    assert quiet_case_failed.search(always.stdout + always.stderr), always.stdout


def test_every_alert_says_how_bad_what_and_where_to_read_on() -> None:
    documentation = (ROOT / monitoring.DOCUMENTATION).read_text()
    headings = set(re.findall(r"^#### (\w+)$", documentation, re.MULTILINE))
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for alert in alerts():
        name = alert["alert"]
        assert name.startswith("Dmp"), name
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert alert.get("for") or name == "DmpDeadLetters", f"{name}: no `for`"
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/observability.md#{name.lower()}", name
        assert name in headings, f"{name}: no section in docs/observability.md"
    assert headings == set(names), "a documented alert that does not exist"


def test_the_alerts_read_only_catalogued_metrics() -> None:
    known = monitoring.known_series((ROOT / monitoring.DOCUMENTATION).read_text())
    for alert in alerts():
        used = monitoring.metric_names(alert["expr"])
        assert used, alert["alert"]
        unknown = {n for n in used if not monitoring.is_known(n, known)}
        assert not unknown, (alert["alert"], unknown)


def test_the_alerts_know_every_process() -> None:
    """The jobs an alert names are the processes, no more, no fewer."""
    for alert in alerts():
        for listed in re.findall(r'job=~"([^"]+)"', alert["expr"]):
            assert set(listed.split("|")) == set(deployfiles.PROCESSES), alert["alert"]
        absent = re.findall(r'absent\(up\{job="(\w+)"\}\)', alert["expr"])
        if absent:
            assert sorted(absent) == sorted(deployfiles.PROCESSES), alert["alert"]


def test_kubernetes_gets_the_same_rules() -> None:
    """The PrometheusRule is written from alerts.yml (python -m dmp_stack.monitoring), and
    kustomize renders it unchanged in the prod overlay."""
    alerts_text = (ROOT / monitoring.ALERTS).read_text()
    committed = (ROOT / monitoring.PROMETHEUS_RULE).read_text()
    assert committed == monitoring.prometheus_rule(alerts_text), (
        "run `python -m dmp_stack.monitoring`"
    )
    prod = deployfiles.render(deployfiles.kustomizations(ROOT)["prod"])
    (rule,) = prod.of_kind("PrometheusRule")
    assert rule["spec"] == {"groups": rules_file()["groups"]}


def test_compose_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((ROOT / monitoring.PROMETHEUS_CONFIG).read_text())
    assert config["rule_files"] == [monitoring.ALERTS.name]
    checked = promtool("check", "config", monitoring.PROMETHEUS_CONFIG.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
