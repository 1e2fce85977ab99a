"""The local stack: infrastructure and every service as detached processes, tracked on disk."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from dmp_kit.config import DEFAULT_PORTS, METRICS_PORT_OFFSET
from dmp_stack.credentials import SERVICES, Credentials
from dmp_stack.infra import (
    InfraError,
    Started,
    free_port,
    spawn,
    start_mongo,
    start_nats,
    start_smtp,
)

STATE_FILE = "state.json"


@dataclass
class Ports:
    gateway: int = 8000
    grpc: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    # Each service's Prometheus metrics (the gateway's are on its own port, at /metrics).
    metrics: dict[str, int] = field(
        default_factory=lambda: {n: p + METRICS_PORT_OFFSET for n, p in DEFAULT_PORTS.items()}
    )

    @classmethod
    def from_env(cls) -> Ports:
        ports = cls(gateway=int(os.environ.get("DMP_GATEWAY_PORT", "8000")))
        for name in ports.grpc:
            if value := os.environ.get(f"DMP_{name.upper()}_PORT"):
                ports.grpc[name] = int(value)
                ports.metrics[name] = int(value) + METRICS_PORT_OFFSET
        return ports

    @classmethod
    def free(cls) -> Ports:
        # Distinct: the system may hand the same free port to two calls in a row.
        ports: set[int] = set()
        while len(ports) < 2 * len(DEFAULT_PORTS) + 1:
            ports.add(free_port())
        gateway, *rest = sorted(ports, key=lambda _: secrets.randbelow(1 << 30))
        grpc, metrics = rest[: len(DEFAULT_PORTS)], rest[len(DEFAULT_PORTS) :]
        return cls(
            gateway=gateway,
            grpc=dict(zip(DEFAULT_PORTS, grpc, strict=True)),
            metrics=dict(zip(DEFAULT_PORTS, metrics, strict=True)),
        )


@dataclass
class StackState:
    started_at: float
    gateway_url: str
    env: dict[str, str]
    deps: list[Started]
    processes: dict[str, int]

    def save(self, path: Path) -> None:
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["deps"] = [Started(**d) for d in data["deps"]]
        return cls(**data)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after the grace period."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.1)


def stop_started(dep: Started) -> None:
    """Stop one started dependency: its process (woken first, in case a test paused it), then
    the processes it stands on (FerretDB's PostgreSQL), or its container. One we were given by
    URL is left alone."""
    if dep.pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(dep.pid, signal.SIGCONT)
        stop_pid(dep.pid)
    for pid in dep.also:
        stop_pid(pid)
    if dep.container is not None:
        subprocess.run(["docker", "rm", "-f", dep.container], capture_output=True)


class Stack:
    """Starts and stops everything under one state directory (`.dmp/` for `make up`).

    Each process gets its own secrets (dmp_stack.credentials): those given, else the ones
    kept under `secrets/` in the state directory, made the first time.
    """

    def __init__(
        self,
        state_dir: Path,
        ports: Ports,
        extra_env: dict[str, str] | None = None,
        credentials: Credentials | None = None,
    ):
        self.state_dir = state_dir
        self.ports = ports
        self.extra_env = extra_env or {}
        self._credentials = credentials
        self._env: dict[str, str] = {}
        self._own_env: dict[str, dict[str, str]] = {}  # by process, given at a restart

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = Credentials.load_or_create(self.state_dir / "secrets")
        return self._credentials

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def state(self) -> StackState | None:
        return StackState.load(self.state_path)

    def running(self) -> bool:
        state = self.state()
        return state is not None and any(alive(p) for p in state.processes.values())

    def up(self, timeout: float = 120.0) -> StackState:
        if self.running():
            raise InfraError(f"the stack under {self.state_dir} is already running (make down)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        deps: list[Started] = []
        processes: dict[str, int] = {}
        try:
            deps.append(start_mongo(self.state_dir))
            deps.append(start_nats(self.state_dir, credentials=self.credentials))
            smtp = start_smtp(self.state_dir)
            deps.append(smtp)
            self._env = self.service_env(deps[0].url, deps[1].url, smtp)
            env = self._env
            for name in (*SERVICES, "gateway"):
                processes[name] = self._spawn(name)
            state = StackState(
                started_at=time.time(),
                gateway_url=f"http://127.0.0.1:{self.ports.gateway}",
                env={k: v for k, v in env.items() if "KEY" not in k and "PASSWORD" not in k},
                deps=deps,
                processes=processes,
            )
            state.save(self.state_path)
            self.wait_ready(state, timeout)
            return state
        except BaseException:
            StackState(time.time(), "", {}, deps, processes).save(self.state_path)
            self.down()
            raise

    def service_env(self, mongo_url: str, nats_url: str, smtp: Started) -> dict[str, str]:
        env = {
            "DMP_ENV": "dev",
            "DMP_MONGO_URL": mongo_url,
            "DMP_NATS_URL": nats_url,
            "DMP_SMTP_HOST": smtp.extra["host"],
            "DMP_SMTP_PORT": smtp.extra["port"],
            "DMP_HTTP_PORT": str(self.ports.gateway),
            "DMP_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.ports.gateway}",
            "PYTHONUNBUFFERED": "1",
            # A scripted walkthrough (a few hundred requests a minute, logins included) passes.
            "DMP_AUTH_RATE_LIMIT": "300/minute",
            "DMP_ACCOUNT_RATE_LIMIT": "60/minute",
        }
        for name, port in self.ports.grpc.items():
            env[f"DMP_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
        # Settings given to `make up` win over the stack's defaults and reach every service.
        env.update({k: v for k, v in os.environ.items() if k.startswith("DMP_")})
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str) -> int:
        proc = spawn(
            [sys.executable, "-m", f"dmp_{name}"],
            self.state_dir / "logs" / f"{name}.log",
            env={
                **os.environ,
                **self._env,
                **self.spawn_env(name),
                **self.credentials.env_for(name),
                **self._own_env.get(name, {}),
            },
        )
        return proc.pid

    def restart(self, name: str, *, kill: bool = True, env: dict[str, str] | None = None) -> None:
        """Stops one process (SIGKILL: no goodbye, as in a crash) and starts it again; `env`:
        settings it runs with from now on, over the stack's and its secrets (a new key, say)."""
        if env:
            self._own_env[name] = {**self._own_env.get(name, {}), **env}
        state = self.state()
        assert state is not None and self._env, "restart needs a stack started by this object"
        pid = state.processes[name]
        if kill:
            os.killpg(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        else:
            stop_pid(pid)
        state.processes[name] = self._spawn(name)
        state.save(self.state_path)
        self.wait_ready(state, 60)

    def spawn_env(self, name: str) -> dict[str, str]:
        if name not in SERVICES:
            return {}
        return {
            "DMP_GRPC_LISTEN": f"127.0.0.1:{self.ports.grpc[name]}",
            "DMP_METRICS_LISTEN": f"127.0.0.1:{self.ports.metrics[name]}",
        }

    def wait_ready(self, state: StackState, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, pid in state.processes.items():
                if not alive(pid):
                    log = self.state_dir / "logs" / f"{name}.log"
                    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                    raise InfraError(f"{name} exited during start; end of its log:\n{tail}")
            try:
                r = httpx.get(f"{state.gateway_url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.5)
        raise InfraError(f"the stack was not ready within {timeout:.0f}s: {last}")

    def down(self) -> None:
        state = self.state()
        if state is None:
            return
        for pid in state.processes.values():
            stop_pid(pid)
        for dep in reversed(state.deps):
            stop_started(dep)
        self.state_path.unlink(missing_ok=True)
