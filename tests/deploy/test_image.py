"""deploy/Dockerfile: the essentials of a safe image, and a build of every image's environment
carried out without Docker, each started and asked for its health the way Docker asks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dmp_stack import deployfiles
from dmp_stack.deployfiles import PROCESSES, SERVICES
from dmp_stack.infra import free_port, spawn
from dmp_stack.testing import Infra, OwnNats, own_nats, until

ROOT = deployfiles.repository_root()
ARGS, STAGES = deployfiles.dockerfile_stages((ROOT / "deploy" / "Dockerfile").read_text())
BUILD, FINAL = STAGES
SECRET_WORDS = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


def instructions(stage: deployfiles.Stage, name: str) -> list[str]:
    return [rest for instruction, rest in stage.instructions if instruction == name]


def test_two_stages_from_one_pinned_base() -> None:
    assert [s.name for s in STAGES] == ["build", "final"]
    assert instructions(BUILD, "FROM") == instructions(FINAL, "FROM") == ["${PYTHON_IMAGE}"]
    # An exact Python release on a named Debian release: never `latest`, never a moving minor.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", ARGS["PYTHON_IMAGE"])


def test_the_final_stage_runs_as_an_unprivileged_user() -> None:
    users = instructions(FINAL, "USER")
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000
    # Kubernetes' runAsUser and the image agree.
    assert "--uid 10001" in " ".join(instructions(FINAL, "RUN"))


def test_no_build_tool_and_no_installer_in_the_final_stage() -> None:
    run = " ".join(instructions(FINAL, "RUN"))
    assert "pip uninstall" in run
    for tool in ("apt-get install", "pip install", "gcc", "uv "):
        assert tool not in run, tool
    copies = instructions(FINAL, "COPY")
    assert copies == ["--from=build /app/.venv /app/.venv"]


def test_health_check_entrypoint_and_labels() -> None:
    assert instructions(FINAL, "HEALTHCHECK")[-1].endswith('CMD ["dmp-probe"]')
    assert instructions(FINAL, "ENTRYPOINT") == ['["dmp-service"]']
    labels = " ".join(instructions(FINAL, "LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_no_secret_in_the_image_definition() -> None:
    for stage in STAGES:
        for instruction, rest in stage.instructions:
            if instruction in ("ENV", "ARG", "LABEL"):
                names = re.findall(r"(\w[\w.]*)=", rest) or [rest.split()[0]]
                assert not [n for n in names if SECRET_WORDS.search(n)], (instruction, rest)
    assert not re.search(r"DMP_\w*(KEY|PASSWORD)", (ROOT / "deploy" / "Dockerfile").read_text())
    context = {p.relative_to(ROOT).as_posix() for p in deployfiles.build_context(ROOT)}
    assert not [
        c for c in context if c.startswith(".env") or "/tests/" in c or c.startswith(".git")
    ]
    assert not [c for c in context if c.startswith("libs/contracts/dmp/")], "stubs are generated"


def test_the_tools_are_the_versions_the_repository_uses() -> None:
    run = " ".join(instructions(BUILD, "RUN"))
    make = (ROOT / "Makefile").read_text()
    (uv,) = re.findall(r"^UV_VERSION := (\S+)", make, re.MULTILINE)
    assert f"uv=={uv}" in run
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    for tool in ("grpcio-tools", "mypy-protobuf"):
        (pinned,) = [d for d in dev if d.startswith(f"{tool}==")]
        assert pinned in run, tool
    assert "--frozen" in run and "--no-dev" in run and "--no-editable" in run


# --------------------------------------------------------------------------- built and started


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every image's /app/.venv, built by the Dockerfile's own build stage: two at a time, as
    one build does not keep two cores busy (the nine: 154 s one at a time, 113 s two)."""
    workdirs = {name: tmp_path_factory.mktemp(f"image-{name}") for name in PROCESSES}
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = {
            name: pool.submit(deployfiles.dry_build, ROOT, name, workdir)
            for name, workdir in workdirs.items()
        }
        return {name: future.result() for name, future in built.items()}


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[OwnNats]:
    """A NATS server of this test's own, with each service's user as deployments have them:
    the images' consumers must not take the test stack's events."""
    with own_nats(tmp_path / "nats") as started:
        yield started


def probe(venv: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "dmp-probe"), *args],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_image_starts_and_reports_healthy(
    environments: dict[str, Path], infra: Infra, nats: OwnNats, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in PROCESSES}
    shared = {
        # The image's own settings (ENV of the final stage) …
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "DMP_SPOOL_DIR": str(tmp_path / "spool"),
        # … and what compose or Kubernetes would give, pointed at this machine.
        "DMP_ENV": "dev",
        "DMP_MONGO_URL": infra.mongo.url,
        "DMP_NATS_URL": nats.service_url,
        "DMP_HTTP_HOST": "127.0.0.1",
        "DMP_HTTP_PORT": str(ports["gateway"]),
        "DMP_SMTP_HOST": infra.smtp.extra["host"],
        "DMP_SMTP_PORT": infra.smtp.extra["port"],
        **{f"DMP_{name.upper()}_ADDR": f"127.0.0.1:{ports[name]}" for name in SERVICES},
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    envs: dict[str, dict[str, str]] = {}
    try:
        for name in PROCESSES:
            venv = environments[name]
            envs[name] = {
                **shared,
                "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
                "DMP_SERVICE": name,
                "DMP_MONGO_DB": f"imagecheck_{name}",
                "DMP_GRPC_LISTEN": f"127.0.0.1:{ports[name]}",
                **nats.credentials.env_for(name),
            }
            # The image's ENTRYPOINT, from / (no source tree: only what was installed).
            processes[name] = spawn(
                [str(venv / "bin" / "dmp-service")],
                tmp_path / f"{name}.log",
                env=envs[name],
                cwd=Path("/"),
            )

        def all_healthy() -> bool:
            for name in PROCESSES:
                assert processes[name].poll() is None, (tmp_path / f"{name}.log").read_text()[
                    -3000:
                ]
            return all(probe(environments[n], envs[n]).returncode == 0 for n in PROCESSES)

        assert until(all_healthy, timeout=120, interval=1.0), "not every image became healthy"
        for name in PROCESSES:
            live = probe(environments[name], envs[name], "--live")
            assert live.returncode == 0, live.stderr
    finally:
        for proc in processes.values():
            os.killpg(proc.pid, signal.SIGTERM)
        stuck = []
        for name, proc in processes.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                stuck.append(name)
    # As an orchestrator asks: SIGTERM stops each within its grace period.
    assert not stuck, f"did not stop on SIGTERM: {stuck}"
    # A stopped service is unhealthy to the same probe.
    stopped = probe(environments["consent"], envs["consent"], "--timeout", "1")
    assert stopped.returncode == 1
