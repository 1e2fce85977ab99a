"""What observing the platform costs: CPU per request with traces exported and metrics scraped,
beside the same stack with tracing off.

`python -m bench.run observability_overhead`. Three stacks of their own, side by side, on the
default database, each with a GP, a dossier of 60 documents they consult and another they add
to; the same loads (a page of 50, a 4 KB submit) on each in turn, round after round, the
medians of 6 rounds compared; measured as `bench.cost` measures (each process's CPU from /proc
around the load, idle cost taken off). "Off": no tracing (metrics are always counted, not
scraped). "On": the production default — a tenth of the traces kept (DMP_TRACE_SAMPLE_RATIO),
their spans exported (to a file, through the SDK's batch processor) — and every process's
/metrics scraped every 5 s, as Prometheus would; "on, every trace": the same with all traces
kept. Issue 22's target: on costs at most 10 % more CPU in our processes than off.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.cost import gp_with_documents, measure, processes
from bench.run import BENCH_ENV, RESULTS, _document, _patient_with_gp, header
from dmp_stack.testing import RunningStack, own_servers, running_stack

TARGET_RATIO = 1.10
SCRAPE_SECONDS = 5.0


@contextlib.contextmanager
def scraped(running: RunningStack) -> Iterator[list[int]]:
    """Every process's /metrics read every SCRAPE_SECONDS meanwhile; yields the count of scrapes
    that answered."""
    stop, done = threading.Event(), [0]
    urls = [f"http://127.0.0.1:{p}/metrics" for p in running.stack.ports.metrics.values()]
    urls.append(f"{running.url}/metrics")

    def scrape() -> None:
        while not stop.wait(SCRAPE_SECONDS):
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    done[0] += httpx.get(url, timeout=5.0).status_code == 200

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join()


ROUNDS = 6


class Rig:
    """One stack of the comparison: a GP, a dossier of 60 documents consulted, another one
    written to, the two loads."""

    def __init__(self, running: RunningStack, ops_dir: Path) -> None:
        self.running, self.ops_dir = running, ops_dir
        ins, token = gp_with_documents(running, 60)
        auth = {"authorization": f"Bearer {token}"}
        # the submits go to another dossier: the one consulted keeps its 60 documents
        other, other_token = _patient_with_gp(running)
        other_auth = {"authorization": f"Bearer {other_token}"}
        self.roots = processes(running)
        body = _document(0)

        async def consult(c: httpx.AsyncClient) -> int:
            r = await c.get(f"/v1/dossiers/{ins}/documents?page_size=50", headers=auth)
            return r.status_code

        async def submit(c: httpx.AsyncClient) -> int:
            r = await c.post(f"/v1/dossiers/{other}/documents", json=body, headers=other_auth)
            return r.status_code

        self.kinds: dict[str, Callable[[httpx.AsyncClient], Any]] = {
            "consult_50": consult,
            "submit": submit,
        }

    def measure(self, kind: str, requests: int) -> dict[str, Any]:
        return measure(self.running, self.roots, self.ops_dir, self.kinds[kind], requests, 8)


def observability_overhead(requests: int) -> dict[str, Any]:
    """The three stacks run side by side and are measured in turn, round after round, so that
    what the machine does meanwhile weighs on each alike; the medians of the rounds."""
    spans = Path(tempfile.mkdtemp(prefix="dmp-spans-")) / "spans.jsonl"
    configurations = (
        ("off", {}),
        # the production default: a tenth of the traces (DMP_TRACE_SAMPLE_RATIO=0.1)
        ("on", {"DMP_TRACE_FILE": str(spans)}),
        ("on_every_trace", {"DMP_TRACE_FILE": str(spans), "DMP_TRACE_SAMPLE_RATIO": "1.0"}),
    )
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    scrapes: dict[str, list[int]] = {}
    with contextlib.ExitStack() as stacks:
        rigs: dict[str, Rig] = {}
        for label, extra in configurations:
            ops_dir = Path(tempfile.mkdtemp(prefix="dmp-ops-"))
            env = {**BENCH_ENV, "DMP_MONGO_OPS_DIR": str(ops_dir), **extra}
            infra = stacks.enter_context(own_servers(f"dmp-bench-{label}-", fault_proxy=False))
            running = stacks.enter_context(running_stack(infra, env=env))
            if label != "off":
                scrapes[label] = stacks.enter_context(scraped(running))
            rigs[label] = Rig(running, ops_dir)
        for _ in range(ROUNDS):
            for kind in ("consult_50", "submit"):
                for label, rig in rigs.items():
                    figures = rig.measure(kind, requests // ROUNDS)
                    rounds.setdefault(label, {}).setdefault(kind, []).append(figures)
    runs = {
        label: {
            kind: {
                "ours_cpu_ms": statistics.median(r["ours_cpu_ms"] for r in measured),
                "rounds": measured,
            }
            for kind, measured in kinds.items()
        }
        for label, kinds in rounds.items()
    }
    for label, counted in scrapes.items():
        runs[label]["scrapes"] = counted[0]  # type: ignore[assignment]
    ratios = {
        kind: round(runs["on"][kind]["ours_cpu_ms"] / runs["off"][kind]["ours_cpu_ms"], 3)
        for kind in ("consult_50", "submit")
    }
    every = {
        kind: round(
            runs["on_every_trace"][kind]["ours_cpu_ms"] / runs["off"][kind]["ours_cpu_ms"], 3
        )
        for kind in ratios
    }
    result = {
        **header("observability_overhead", __doc__.split("\n\n")[0] if __doc__ else ""),
        "requests": requests,
        "ours_cpu_ms": {
            kind: {label: runs[label][kind]["ours_cpu_ms"] for label in runs} for kind in ratios
        },
        "ratio_on_to_off": ratios,
        "ratio_every_trace_to_off": every,
        "spans_exported": sum(1 for _ in spans.open()) if spans.exists() else 0,
        "target_ratio": TARGET_RATIO,
        "meets_target": all(r <= TARGET_RATIO for r in ratios.values()),
        "runs": runs,
    }
    (RESULTS / "observability_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result
