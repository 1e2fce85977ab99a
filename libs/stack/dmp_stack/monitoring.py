"""The monitoring files: alerting rules, their Kubernetes copy, and the metric names they use.

deploy/observability/prometheus/alerts.yml is the one source of the alerting rules; the
PrometheusRule of deploy/k8s/components/monitoring carries the same groups, comments included,
so that a change is made once and copied by

    python -m dmp_stack.monitoring

The metrics an expression may use are those of the catalogue in docs/observability.md
(section "Metrics"), plus Prometheus's own `up` and the client library's standard process_*
and python_gc_* metrics. tests/deploy reads alerts and dashboards with these functions.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ALERTS = Path("deploy/observability/prometheus/alerts.yml")
ALERT_TESTS = Path("deploy/observability/prometheus/alerts_test.yml")
PROMETHEUS_CONFIG = Path("deploy/observability/prometheus/prometheus.yml")
PROMETHEUS_RULE = Path("deploy/k8s/components/monitoring/prometheus-rule.yaml")
DASHBOARDS = Path("deploy/observability/grafana/dashboards")
DOCUMENTATION = Path("docs/observability.md")
STANDARD_PREFIXES = ("process_", "python_gc_", "python_info")

HEADER = f"""\
# Written by `python -m dmp_stack.monitoring` from {ALERTS}:
# edit that file, not this one.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: dmp
spec:
"""


def prometheus_rule(alerts: str) -> str:
    """The PrometheusRule manifest whose spec is the rules file `alerts` (its `groups:` and
    everything after it, indented under `spec:`)."""
    lines = alerts.splitlines()
    start = lines.index("groups:")
    body = "".join(f"  {line}".rstrip() + "\n" for line in lines[start:])
    return HEADER + body


# --------------------------------------------------------------------------- metric names

_CATALOGUE_ROW = re.compile(r"^\|\s*`(?P<name>[a-z_:][a-z0-9_:]*)`\s*\|\s*(?P<type>\w+)\s*\|")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def catalogue(documentation: str) -> dict[str, str]:
    """The metrics of the "## Metrics" section's tables: name → type (counter, gauge,
    histogram)."""
    section = documentation.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return {
        match["name"]: match["type"]
        for line in section.splitlines()
        if (match := _CATALOGUE_ROW.match(line))
    }


def known_series(documentation: str) -> set[str]:
    """Every series name the catalogue allows (a histogram's _bucket, _sum and _count)."""
    names = set()
    for name, kind in catalogue(documentation).items():
        names |= {name + s for s in _HISTOGRAM_SERIES} if kind == "histogram" else {name}
    return names | {"up"}


def is_known(name: str, known: set[str]) -> bool:
    return name in known or name.startswith(STANDARD_PREFIXES)


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLES = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\s*\(|[\w])")
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are neither functions,
    keywords, label names (inside {…} or a by/on clause) nor durations."""
    text = _VARIABLES.sub("", _STRINGS.sub('""', expr))
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    return {n for n in _IDENTIFIER.findall(text) if n.lower() not in _KEYWORDS}


def main() -> int:
    from dmp_stack.deployfiles import repository_root

    root = repository_root()
    (root / PROMETHEUS_RULE).write_text(prometheus_rule((root / ALERTS).read_text()))
    print(f"wrote {PROMETHEUS_RULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
