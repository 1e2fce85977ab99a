"""Reading the trace file (DMP_TRACE_FILE: one span a JSON line) and printing traces as trees."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

Span = dict[str, Any]


def read_spans(path: Path) -> list[Span]:
    """Every complete line of the file (a process may be writing the last one)."""
    if not path.exists():
        return []
    spans = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return spans


def by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    """Spans grouped by trace, the traces in the order of their first span's start."""
    grouped: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        grouped[span["trace_id"]].append(span)
    return dict(sorted(grouped.items(), key=lambda kv: min(s["start_ns"] for s in kv[1])))


def roots(spans: list[Span]) -> list[Span]:
    """The spans of a trace whose parent is not in it: one, in a whole trace."""
    ids = {s["span_id"] for s in spans}
    return [s for s in spans if s["parent_span_id"] not in ids]


def tree(spans: list[Span]) -> list[str]:
    """The trace as indented lines: service, span name, duration, status; children by start."""
    children: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        children[span["parent_span_id"]].append(span)
    start = min(s["start_ns"] for s in spans)
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        took = (span["end_ns"] - span["start_ns"]) / 1e6
        at = (span["start_ns"] - start) / 1e6
        status = "" if span["status"] != "ERROR" else "  ERROR"
        lines.append(
            f"{at:9.1f} ms {took:9.1f} ms  {'  ' * depth}{span['service']}: {span['name']}{status}"
        )
        for child in sorted(children[span["span_id"]], key=lambda s: s["start_ns"]):
            walk(child, depth + 1)

    for root in sorted(roots(spans), key=lambda s: s["start_ns"]):
        walk(root, 0)
    return lines


def print_traces(path: Path, last: int) -> int:
    spans = read_spans(path)
    if not spans:
        print(f"No spans in {path} yet (make up, then use the stack).")
        return 1
    traces = list(by_trace(spans).items())[-last:]
    for trace_id, members in traces:
        services = sorted({s["service"] for s in members})
        print(f"trace {trace_id}  ({len(members)} spans: {', '.join(services)})")
        print("    start   duration")
        for line in tree(members):
            print(line)
        print()
    return 0
