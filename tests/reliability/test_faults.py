"""Fault injection under a write load: what was acknowledged survives, once.

The platform runs on infrastructure of its own here (FerretDB, NATS, SMTP sink), so that
killing, pausing and restarting touch nothing else. For each fault, in each cycle: the load
runs (opens, document submissions, consent changes), the fault strikes half-way, the load
goes on, then the checks of dmp_stack.workload.check: every acknowledged write readable,
nothing duplicated, every event consumed (outbox and consumers drained), the audit log
verifying (`dmp audit verify`), each document notified once.

`make test` runs one cycle per fault; `make test-reliability` runs DMP_RELIABILITY_CYCLES
(default 3) and records the figures in .dmp/reliability.json (the README quotes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from dmp_kit.bus import STREAMS
from dmp_stack.infra import nats_binary, spawn, wait_port
from dmp_stack.stack import stop_pid
from dmp_stack.testing import RunningStack, own_servers, running_stack, until
from dmp_stack.workload import Workload, check, run_for

CYCLES = int(os.environ.get("DMP_RELIABILITY_CYCLES", "1"))
LOAD_SECONDS = float(os.environ.get("DMP_RELIABILITY_SECONDS", "5"))
RESULTS = Path(".dmp") / "reliability.json"
KINDS = ("open", "gp", "submit", "consent")
SERVICES = ("identity", "dossier", "consent", "audit", "notify", "ingest", "gateway")
FAULTS = (
    *(f"kill -9 {name}" for name in SERVICES),
    "restart NATS",
    "pause the database",
    "duplicate and reorder events",
    SEQUENCER_FAILOVER := "kill -9 the audit sequencer: a standby replica takes over",
)


@dataclass
class Rig:
    stack: RunningStack
    workload: Workload
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    # Servers of its own, whatever the session uses.
    with own_servers("dmp-reliability-") as infra, running_stack(infra) as stack:
        yield Rig(stack, Workload(stack))


def restart_nats(stack: RunningStack) -> None:
    """Stops NATS (SIGTERM, as an orchestrator does: the process itself, a restart is the
    point) and starts it again on its port, its files and its configuration (the same users and
    permissions); the clients reconnect through the fault proxy."""
    dep = stack.infra.nats
    assert dep.pid is not None, "NATS is not a local process here"
    stop_pid(dep.pid)
    port = int(dep.extra["direct_url"].rsplit(":", 1)[1])
    config = stack.infra.root / "secrets" / "nats.conf"
    log = stack.infra.root / "logs" / "nats.log"
    proc = spawn([str(nats_binary()), "-c", str(config)], log)
    wait_port(port, 30, proc, "nats-server", log)
    dep.pid = proc.pid


def pause_database(stack: RunningStack, seconds: float = 7.0) -> None:
    """Longer than the clients' 5 s deadline; every byte held at the fault proxy, both ways."""
    stack.infra.pause(stack.infra.mongo)
    time.sleep(seconds)
    stack.infra.resume(stack.infra.mongo)


def duplicate_and_reorder(stack: RunningStack, per_stream: int = 40) -> None:
    """The last events of every stream published again, shuffled, under new message ids (so
    that JetStream's deduplication lets them through): each consumer sees them twice, out of
    order."""

    async def go() -> None:
        nc = await nats.connect(stack.infra.nats.url)
        try:
            js = nc.jetstream()
            copies = []
            for stream in STREAMS:
                last = (await js.stream_info(stream)).state.last_seq
                for seq in range(max(1, last - per_stream + 1), last + 1):
                    msg = await js.get_msg(stream, seq)
                    copies.append((msg.subject, msg.data))
            random.shuffle(copies)
            for subject, data in copies:
                await js.publish(subject, data, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        finally:
            await nc.close()

    asyncio.run(go())


def fail_over(stack: RunningStack, standby: Path) -> None:
    """The sequencer dies mid-append (SIGKILL: its lease is never released); the standby must
    take over once the lease lapses, then the dead one comes back, as a standby in its turn."""
    acquired = '"audit_sequencer_acquired"'
    assert acquired not in standby.read_text(errors="replace"), "the standby was the sequencer"
    pid = stack.processes["audit"]
    os.killpg(pid, signal.SIGKILL)
    assert until(lambda: acquired in standby.read_text(errors="replace"), timeout=60), standby
    stack.stack.restart("audit", kill=False)


def inject(stack: RunningStack, fault: str, standby: Path | None = None) -> None:
    if fault == SEQUENCER_FAILOVER:
        assert standby is not None
        fail_over(stack, standby)
    elif fault.startswith("kill -9 "):
        stack.stack.restart(fault.removeprefix("kill -9 "), kill=True)
    elif fault == "restart NATS":
        restart_nats(stack)
    elif fault == "pause the database":
        pause_database(stack)
    else:
        duplicate_and_reorder(stack)


@pytest.mark.parametrize("fault", FAULTS)
def test_acknowledged_writes_survive(rig: Rig, fault: str) -> None:
    mark = rig.workload.tally.mark()
    lost = duplicated = 0
    for cycle in range(CYCLES):
        standby = rig.stack.another_replica("audit") if fault == SEQUENCER_FAILOVER else None
        with standby or nullcontext() as standby_log:
            run_for(
                rig.workload, LOAD_SECONDS, during=lambda: inject(rig.stack, fault, standby_log)
            )
            # On FerretDB the consumers take their time over a burst of copies: give them room.
            findings = check(rig.workload, timeout=240)
        lost += len(findings.lost)
        duplicated += len(findings.duplicated)
        assert findings.ok(), (fault, cycle, findings)
    figures = rig.workload.tally.since(mark, CYCLES)
    acknowledged, failed = figures["by_kind"], figures["failed"]
    rig.results[fault] = {
        **figures,
        "lost": lost,
        "duplicated": duplicated,
    }
    # After each fault, so that a run cut short still leaves its figures.
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cycles": CYCLES, "faults": rig.results}, indent=2))
    # The writes went on across the fault (a load that had stopped, say on expired tokens,
    # would prove nothing). New DMPs are a tenth of the load: one 5-second cycle may have none.
    expected = KINDS if CYCLES >= 3 else ("submit", "consent")
    assert all(acknowledged.get(kind, 0) > 0 for kind in expected), (fault, acknowledged, failed)
