"""The soak: mixed write load on a stack of its own for 10 minutes (`make soak`).

Every 30 s: the acknowledged operations per second in that window, the failures, and the
resident memory of every process (the six services, the gateway, FerretDB, NATS, and with
DMP_FERRETDB_BACKEND=postgresql the PostgreSQL under FerretDB: the proportional memory of all
its processes). At the end, the checks of the fault tests (nothing lost, nothing doubled, every
event consumed, the audit log verifying). Results: bench/results/soak.json (or --out); the
README quotes them.

    python -m bench.soak [--minutes 10] [--window 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dmp_stack.testing import RunningStack, own_infra, running_stack
from dmp_stack.workload import Workload, check

RESULTS = Path(__file__).parent / "results" / "soak.json"


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pss_tree_mib(pid: int) -> float:
    """Proportional memory of a process and its children (PostgreSQL's backends share their
    buffers: summing their RSS would count the shared pages once per process)."""
    pids = [pid, *(int(c) for c in _children(pid))]
    total = 0
    for one in pids:
        try:
            rollup = Path(f"/proc/{one}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(
            int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")
        )
    return round(total / 1024, 1)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def memory(stack: RunningStack) -> dict[str, float]:
    state = stack.stack.state()
    assert state is not None
    found = {name: rss_mib(pid) for name, pid in state.processes.items()}
    found["ferretdb"] = rss_mib(stack.infra.mongo.pid)
    for pid in stack.infra.mongo.also:
        found["postgres"] = pss_tree_mib(pid)
    found["nats"] = rss_mib(stack.infra.nats.pid)
    return found


def soak(minutes: float, window: float) -> dict[str, Any]:
    saved = {k: os.environ.pop(k, None) for k in ("DMP_MONGO_URL", "DMP_NATS_URL")}
    try:
        with own_infra("dmp-soak-", fault_proxy=False) as infra, running_stack(infra) as stack:
            workload = Workload(stack, patients=12)
            stop = threading.Event()
            threads = workload.run(stop, threads=4)
            windows = []
            started = time.monotonic()
            first = memory(stack)
            last_acks = sum(workload.tally.acknowledged.values())
            last_failures = collections.Counter(workload.tally.failures)
            while time.monotonic() - started < minutes * 60:
                time.sleep(window)
                acks = sum(workload.tally.acknowledged.values())
                failures = collections.Counter(workload.tally.failures)
                windows.append(
                    {
                        "at_s": round(time.monotonic() - started),
                        "ops_per_s": round((acks - last_acks) / window, 1),
                        "failures": dict(failures - last_failures),
                        "rss_mib": memory(stack),
                    }
                )
                print(json.dumps(windows[-1]), flush=True)
                last_acks, last_failures = acks, failures
            stop.set()
            for thread in threads:
                thread.join(30)
            findings = check(workload)
            rates = [w["ops_per_s"] for w in windows]
            latencies = sorted(workload.tally.latencies)
            return {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "database": stack.infra.mongo.source,
                "minutes": minutes,
                "acknowledged": dict(workload.tally.acknowledged),
                "failures": dict(workload.tally.failures),
                "ops_per_s": {
                    "median": statistics.median(rates),
                    "min": min(rates),
                    "max": max(rates),
                },
                "latency_ms": {
                    "median": round(1000 * statistics.median(latencies), 1),
                    "p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
                },
                "rss_mib_start": first,
                "rss_mib_end": windows[-1]["rss_mib"],
                "windows": windows,
                "lost": findings.lost,
                "duplicated": findings.duplicated,
                "other": findings.other,
            }
    finally:
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = soak(args.minutes, args.window)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=2))
    if result["lost"] or result["duplicated"] or result["other"] or result["failures"]:
        raise SystemExit(f"the soak found a problem ({args.out})")


if __name__ == "__main__":
    main()
