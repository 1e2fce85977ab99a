"""The audit log's own metrics: its size, the time of its newest signed head, which replica
appends. Read when Prometheus scrapes, from what the process holds (no database call)."""

from __future__ import annotations

from datetime import datetime

from dmp_audit.log import AuditLog
from dmp_kit.lease import Lease
from dmp_kit.metrics import Gauge

LOG_ENTRIES = Gauge("dmp_audit_log_entries", "Entries covered by the newest signed head")
LAST_HEAD = Gauge(
    "dmp_audit_last_signed_head_timestamp_seconds",
    "Unix time of the newest signed head (one is signed whenever the log grows)",
)
SEQUENCER = Gauge("dmp_audit_sequencer", "1 on the replica that holds the append lease")


def observe(audit: AuditLog, lease: Lease) -> None:
    LOG_ENTRIES.set_function(lambda: audit.head.size if audit.head else 0)
    LAST_HEAD.set_function(
        lambda: datetime.fromisoformat(audit.head.timestamp).timestamp() if audit.head else 0
    )
    SEQUENCER.set_function(lambda: 1 if lease.held else 0)
