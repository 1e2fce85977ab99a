"""The local stack: infrastructure and every service as detached processes, tracked on disk."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    start_nats_cluster,
    start_smtp,
    wait_port,
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
        gateway, *rest = free_ports(2 * len(DEFAULT_PORTS) + 1)
        grpc, metrics = rest[: len(DEFAULT_PORTS)], rest[len(DEFAULT_PORTS) :]
        return cls(
            gateway=gateway,
            grpc=dict(zip(DEFAULT_PORTS, grpc, strict=True)),
            metrics=dict(zip(DEFAULT_PORTS, metrics, strict=True)),
        )


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (the system may hand the same one to two calls in a row)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports, key=lambda _: secrets.randbelow(1 << 30))


# The services that run as several replicas in the scaled stack (ingest keeps one: its spool).
REPLICATED = ("identity", "dossier", "consent", "audit", "notify", "messaging", "agenda")


@dataclass(frozen=True)
class Instance:
    """One process of the stack: its name (`dossier`, `dossier-2`), its service, its port (gRPC,
    or HTTP for a gateway) and its metrics port (a gateway's are on its own)."""

    name: str
    service: str
    port: int
    metrics: int | None


@dataclass
class StackState:
    started_at: float
    gateway_url: str
    env: dict[str, str]
    deps: list[Started]
    processes: dict[str, int]
    # Every gateway's URL (the scaled stack runs more than one); the first is gateway_url.
    gateway_urls: list[str] = field(default_factory=list)

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
    """Stop one started dependency: its process, then the processes it stands on (FerretDB's
    PostgreSQL), or its container. One we were given by URL is left alone."""
    if dep.pid is not None:
        stop_pid(dep.pid)
    for pid in dep.also:
        stop_pid(pid)
    if dep.container is not None:
        subprocess.run(["docker", "rm", "-f", dep.container], capture_output=True)


def document_leases(database: Started, replicas: int) -> dict[str, str]:
    """The setting several replicas need on FerretDB, whose compare-and-set is not atomic
    between clients (dmp_kit.mongo.DocumentLocks); none on MongoDB or with one replica."""
    if replicas > 1 and database.source.startswith("ferretdb"):
        return {"DMP_DOCUMENT_LEASES": "true"}
    return {}


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
        replicas: int = 1,
        nats_nodes: int = 1,
    ):
        self.state_dir = state_dir
        self.ports = ports
        self.extra_env = extra_env or {}
        self._credentials = credentials
        self._env: dict[str, str] = {}
        self._own_env: dict[str, dict[str, str]] = {}  # by process, given at a restart
        # The scaled stack: `replicas` processes of each service that can have several (ingest
        # keeps its one: its spool), behind round-robin channels, and as many gateways; NATS
        # as a JetStream cluster of `nats_nodes` with streams on every member.
        self.nats_nodes = nats_nodes
        self.replicas = replicas
        self.instances: dict[str, Instance] = {
            name: Instance(name, name, ports.grpc.get(name, ports.gateway), ports.metrics.get(name))
            for name in (*SERVICES, "gateway")
        }
        extra = [
            (service, n) for service in (*REPLICATED, "gateway") for n in range(2, replicas + 1)
        ]
        # Distinct from one another and from `ports` (a gRPC port and a metrics port each).
        taken = {ports.gateway, *ports.grpc.values(), *ports.metrics.values()}
        found = free_ports(2 * len(extra) + len(taken)) if extra else []
        spare = iter(p for p in found if p not in taken)
        for service, n in extra:
            name = f"{service}-{n}"
            port, metrics = next(spare), next(spare)
            self.instances[name] = Instance(
                name, service, port, metrics if service != "gateway" else None
            )

    def replicas_of(self, service: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.service == service]

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
            if self.nats_nodes > 1 and not os.environ.get("DMP_NATS_URL"):
                nats = start_nats_cluster(self.state_dir, self.credentials, self.nats_nodes)
            else:
                nats = start_nats(self.state_dir, credentials=self.credentials)
            deps.append(nats)
            smtp = start_smtp(self.state_dir)
            deps.append(smtp)
            self._env = {
                **document_leases(deps[0], self.replicas),
                **self.service_env(deps[0].url, deps[1].url, smtp),
            }
            env = self._env
            for name in self.instances:
                processes[name] = self._spawn(name)
            gateways = [f"http://127.0.0.1:{i.port}" for i in self.replicas_of("gateway")]
            state = StackState(
                started_at=time.time(),
                gateway_url=gateways[0],
                env={k: v for k, v in env.items() if "KEY" not in k and "PASSWORD" not in k},
                deps=deps,
                processes=processes,
                gateway_urls=gateways,
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
        for name in self.ports.grpc:
            addresses = [f"127.0.0.1:{i.port}" for i in self.replicas_of(name)]
            env[f"DMP_{name.upper()}_ADDR"] = ",".join(addresses)  # round-robin over them
        if self.nats_nodes > 1:
            env["DMP_NATS_STREAM_REPLICAS"] = str(min(3, self.nats_nodes))
        # Settings given to `make up` win over the stack's defaults and reach every service.
        env.update({k: v for k, v in os.environ.items() if k.startswith("DMP_")})
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str) -> int:
        service = self.instances[name].service
        proc = spawn(
            [sys.executable, "-m", f"dmp_{service}"],
            self.state_dir / "logs" / f"{name}.log",
            env={
                **os.environ,
                **self._env,
                **self.spawn_env(name),
                **self.credentials.env_for(service),
                **self._own_env.get(name, {}),
            },
        )
        return proc.pid

    def restart(self, name: str, *, kill: bool = True, env: dict[str, str] | None = None) -> None:
        """Stops one process (SIGKILL: no goodbye, as in a crash) and starts it again; `env`:
        settings it runs with from now on, over the stack's and its secrets (a new key, say)."""
        if env:
            self._own_env[name] = {**self._own_env.get(name, {}), **env}
        self._stop(name, kill)
        self._start_again(name)

    @contextmanager
    def away(self, name: str) -> Iterator[None]:
        """One process killed (SIGKILL) and kept away while the block runs, then started again
        and waited for: an outage of that service."""
        self._stop(name, kill=True)
        try:
            yield
        finally:
            self._start_again(name)

    def _stop(self, name: str, kill: bool) -> None:
        state = self.state()
        assert state is not None and self._env, "restart needs a stack started by this object"
        pid = state.processes[name]
        if kill:
            os.killpg(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        else:
            stop_pid(pid)

    def _start_again(self, name: str) -> None:
        state = self.state()
        assert state is not None
        state.processes[name] = self._spawn(name)
        state.save(self.state_path)
        self.wait_ready(state, 60)
        # The gateway is ready with one replica of a service: wait for this one's own ports.
        instance = self.instances[name]
        if instance.service != "gateway":
            for port in (instance.port, instance.metrics):
                if port:
                    wait_port(port, 60, what=name)

    def spawn_env(self, name: str) -> dict[str, str]:
        instance = self.instances[name]
        if instance.service == "gateway":
            return {} if name == "gateway" else {"DMP_HTTP_PORT": str(instance.port)}
        own = {
            "DMP_GRPC_LISTEN": f"127.0.0.1:{instance.port}",
            "DMP_METRICS_LISTEN": f"127.0.0.1:{instance.metrics}",
        }
        if instance.service == "audit":  # each replica its own tile files, as on its own node
            own["DMP_TILE_DIR"] = str(self.state_dir / "tiles" / name)
        return own

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
                answers = [
                    httpx.get(f"{url}/readyz", timeout=2.0)
                    for url in state.gateway_urls or [state.gateway_url]
                ]
                if all(r.status_code == 200 for r in answers):
                    return
                last = next(r.text for r in answers if r.status_code != 200)
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
