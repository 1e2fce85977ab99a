"""Every deployment file passes the validator of the tool that reads it (make deploy-check),
and each validator does reject a broken file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmp_stack import deployfiles
from dmp_stack.deployfiles import Manifests

ROOT = deployfiles.repository_root()
CHECKS = deployfiles.checks(ROOT)


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_file_is_valid(name: str) -> None:
    done = CHECKS[name]()
    assert done.returncode == 0, done.stdout + done.stderr


def test_strict_kubernetes_validation_rejects_an_unknown_field() -> None:
    good = deployfiles.render(deployfiles.kustomizations(ROOT)["prod"])
    bad = Manifests(good.text.replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"), [])
    done = deployfiles.validate_kubernetes(bad, deployfiles.KUBERNETES_VERSIONS[-1])
    assert done.returncode != 0
    assert "readOnlyRootFilesytem" in done.stdout + done.stderr


def test_compose_refuses_to_start_without_its_secrets() -> None:
    with deployfiles.env_file(ROOT) as env:
        done = deployfiles.compose(ROOT, deployfiles.COMPOSE_FILES[:1], "config", "-q", env=env)
    assert done.returncode != 0
    assert "in .env" in done.stderr


def test_compose_validation_rejects_an_unknown_key(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "  read_only: true" in text
    target = tmp_path / "docker-compose.yml"
    target.write_text(text.replace("  read_only: true", "  readonly: true", 1))
    done = deployfiles.run(
        [
            deployfiles._bin("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(target),
        ]
    )
    assert done.returncode != 0
