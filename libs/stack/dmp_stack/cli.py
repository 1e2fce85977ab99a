"""`dmp-stack up|down|status|logs|url|traces`: the local stack behind `make up` and friends."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import httpx

from dmp_stack.infra import InfraError
from dmp_stack.stack import Ports, Stack, alive
from dmp_stack.traces import print_traces

STATE_DIR = Path(".dmp")
# Where every process of the stack appends its spans, unless they go to a collector.
TRACE_FILE = STATE_DIR / "traces.jsonl"


def _stack(scaled: bool = False) -> Stack:
    """The local stack; `scaled`: two replicas of each service that can have several and two
    gateways, over a JetStream cluster of three (`make up-scaled`)."""
    return Stack(
        STATE_DIR.resolve(),
        Ports.from_env(),
        extra_env=_trace_env(),
        replicas=2 if scaled else 1,
        nats_nodes=3 if scaled else 1,
    )


def _trace_env() -> dict[str, str]:
    """No OpenTelemetry collector installs here (no container, none on PyPI or in Debian): the
    spans go to a file, read by `make traces`, unless DMP_OTLP_ENDPOINT names a collector.
    Every request is traced, unless DMP_TRACE_SAMPLE_RATIO says otherwise."""
    env = {}
    if not os.environ.get("DMP_TRACE_SAMPLE_RATIO"):
        env["DMP_TRACE_SAMPLE_RATIO"] = "1.0"
    if not (os.environ.get("DMP_OTLP_ENDPOINT") or os.environ.get("DMP_TRACE_FILE")):
        env["DMP_TRACE_FILE"] = str(TRACE_FILE.resolve())
    return env


def _traces_where() -> str:
    if endpoint := os.environ.get("DMP_OTLP_ENDPOINT"):
        return f"sent by OTLP/HTTP to {endpoint}"
    return f"make traces   (spans in {os.environ.get('DMP_TRACE_FILE') or TRACE_FILE})"


def up(scaled: bool = False) -> int:
    stack = _stack(scaled)
    if stack.running():
        state = stack.state()
        print(
            f"The stack is already running at {state.gateway_url if state else '?'} "
            "(make status; make down to stop it)."
        )
        return 0
    print("Starting MongoDB-compatible database, NATS, SMTP sink, services and gateway…")
    try:
        state = stack.up()
    except InfraError as exc:
        print(f"Could not start the stack: {exc}", file=sys.stderr)
        return 1
    url = state.gateway_url
    deps = ", ".join(f"{d.name}: {d.source}" for d in state.deps)
    metrics = (
        "http://127.0.0.1:{port}/metrics ("
        + ", ".join(f"{name} {port}" for name, port in stack.ports.metrics.items())
        + ")"
    )
    others = "".join(
        f"\n            {other}/v1 (another gateway)" for other in state.gateway_urls[1:]
    )
    if len(stack.instances) > len(stack.ports.grpc) + 1:
        deps += f"; {len(stack.instances)} processes, services behind round-robin channels"
    print(f"""
The DMP stack is up ({deps}).
  Portal    {url}/          (patients and professionals, in a browser)
  Gateway   {url}/v1{others}
  API docs  {url}/docs
  Logs      make logs   (files under {STATE_DIR}/logs)
  Metrics   {url}/metrics, and each service's at {metrics}
            (catalogue, alerts and dashboards: docs/observability.md)
  Traces    {_traces_where()}

Log in as the development administrator:
  curl -s {url}/v1/auth/login -H 'content-type: application/json' \\
       -d '{{"kind":"admin","login":"admin","password":"dev-admin-password"}}'
  (dev default password; yours if DMP_BOOTSTRAP_ADMIN_PASSWORD is set)
  then read the code: curl -s '{url}/dev/outbox?to=admin@dmp.localhost'
  and exchange it:    curl -s {url}/v1/auth/otp -H 'content-type: application/json' \\
       -d '{{"challenge_id":"…","code":"……"}}'
""")
    return 0


def down() -> int:
    stack = _stack()
    if stack.state() is None:
        print("Nothing is running.")
        return 0
    stack.down()
    print("Stopped.")
    return 0


def status() -> int:
    stack = _stack()
    state = stack.state()
    if state is None:
        print("Not running.")
        return 1
    for dep in state.deps:
        where = (
            f"pid {dep.pid} {'up' if dep.pid and alive(dep.pid) else 'DOWN'}"
            if dep.pid
            else dep.source
        )
        print(f"  {dep.name:<9} {dep.url:<36} {where}")
    for name, pid in state.processes.items():
        print(f"  {name:<9} pid {pid:<8} {'up' if alive(pid) else 'DOWN'}")
    try:
        ready = httpx.get(f"{state.gateway_url}/readyz", timeout=3).json()
    except httpx.HTTPError as exc:
        print(f"  readyz    unreachable ({type(exc).__name__})")
        return 1
    print(f"  readyz    {ready.get('status', 'not ready')} {ready.get('checks', '')}")
    return 0


def url(name: str) -> int:
    """Print where the running stack's dependency is (`dmp-stack url mongo`), for tools."""
    state = _stack().state()
    found = [d.url for d in state.deps if d.name == name] if state else []
    if state and name == "gateway":
        found = [state.gateway_url]
    if not found:
        print(f"No {name} in a running stack (make up).", file=sys.stderr)
        return 1
    print(found[0])
    return 0


def logs(service: str | None) -> int:
    logs_dir = STATE_DIR / "logs"
    files = [logs_dir / f"{service}.log"] if service else sorted(logs_dir.glob("*.log"))
    if not files or not all(f.exists() for f in files):
        print("No logs yet (make up).")
        return 1
    return subprocess.call(["tail", "-n", "50", "-F", *map(str, files)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="dmp-stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument(
        "--scaled",
        action="store_true",
        help="two replicas of each service and of the gateway, NATS as a cluster of three",
    )
    sub.add_parser("down")
    sub.add_parser("status")
    url_parser = sub.add_parser("url")
    url_parser.add_argument("dependency", choices=["mongo", "nats", "smtp", "gateway"])
    logs_parser = sub.add_parser("logs")
    logs_parser.add_argument("service", nargs="?")
    traces_parser = sub.add_parser("traces", help="print the newest traces as trees")
    traces_parser.add_argument("--last", type=int, default=5, help="how many traces (5)")
    traces_parser.add_argument("--file", type=Path, default=None, help="a trace file")
    args = parser.parse_args()
    if args.command == "up":
        sys.exit(up(args.scaled))
    if args.command == "down":
        sys.exit(down())
    if args.command == "status":
        sys.exit(status())
    if args.command == "url":
        sys.exit(url(args.dependency))
    if args.command == "traces":
        default = Path(os.environ.get("DMP_TRACE_FILE") or TRACE_FILE)
        sys.exit(print_traces(args.file or default, args.last))
    sys.exit(logs(args.service))


if __name__ == "__main__":
    main()
