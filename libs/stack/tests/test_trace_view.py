"""`make up`'s trace settings and `make traces`' trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmp_stack import cli
from dmp_stack.traces import by_trace, read_spans, roots, tree


def test_make_up_traces_to_a_file_unless_a_collector_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DMP_OTLP_ENDPOINT", "DMP_TRACE_FILE", "DMP_TRACE_SAMPLE_RATIO"):
        monkeypatch.delenv(name, raising=False)
    env = cli._trace_env()
    assert env["DMP_TRACE_FILE"].endswith(".dmp/traces.jsonl")
    assert env["DMP_TRACE_SAMPLE_RATIO"] == "1.0"
    monkeypatch.setenv("DMP_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("DMP_TRACE_SAMPLE_RATIO", "0.5")
    assert cli._trace_env() == {}


def span(trace: str, span_id: str, parent: str, name: str, start: int) -> dict[str, object]:
    return {
        "trace_id": trace,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "service": "dossier",
        "kind": "SERVER",
        "start_ns": start,
        "end_ns": start + 2_000_000,
        "status": "UNSET",
        "attributes": {},
    }


def test_a_trace_prints_as_a_tree_children_under_their_parent(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    spans = [
        span("t1", "c", "b", "find dossier.listings", 3_000_000),
        span("t1", "a", "x", "GET /v1/dossiers/{ins}/documents", 0),
        span("t1", "b", "a", "ListDocuments", 1_000_000),
        span("t2", "d", "", "process document.added", 9_000_000),
    ]
    path.write_text("".join(json.dumps(s) + "\n" for s in spans) + '{"cut')
    read = read_spans(path)
    assert len(read) == 4  # the unfinished last line is left
    traces = by_trace(read)
    assert list(traces) == ["t1", "t2"]
    assert [s["span_id"] for s in roots(traces["t1"])] == ["a"]
    lines = tree(traces["t1"])
    assert [line.split("dossier: ")[1] for line in lines] == [
        "GET /v1/dossiers/{ins}/documents",
        "ListDocuments",
        "find dossier.listings",
    ]
    indents = [len(line.split("dossier: ")[0]) for line in lines]
    assert indents[0] < indents[1] < indents[2]
