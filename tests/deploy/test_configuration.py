"""One configuration: every setting documented with its true default, and compose and
Kubernetes giving each service the same settings."""

from __future__ import annotations

import re
import tempfile
from enum import Enum
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from dmp_agenda.config import AgendaSettings
from dmp_audit.config import AuditSettings
from dmp_consent.config import ConsentSettings
from dmp_dossier.config import DossierSettings
from dmp_gateway.config import GatewaySettings
from dmp_identity.config import IdentitySettings
from dmp_ingest.config import IngestSettings
from dmp_messaging.config import MessagingSettings
from dmp_notify.config import NotifySettings
from dmp_stack import deployfiles
from dmp_stack.deployfiles import COMPOSE_FILES, PROCESSES, TEST_SECRETS, Manifests

ROOT = deployfiles.repository_root()
SETTINGS: dict[str, type[BaseSettings]] = {
    "audit": AuditSettings,
    "consent": ConsentSettings,
    "dossier": DossierSettings,
    "gateway": GatewaySettings,
    "identity": IdentitySettings,
    "ingest": IngestSettings,
    "notify": NotifySettings,
    "messaging": MessagingSettings,
    "agenda": AgendaSettings,
}
ROW = re.compile(r"^\| `(DMP_[A-Z0-9_]+)` \| ([^|]+) \| ([^|]+) \|", re.MULTILINE)


def documented() -> dict[str, tuple[set[str], str]]:
    """Setting → (the processes said to read it, the default shown), from the settings tables."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    text = text.split("## Outside the services")[0]
    rows = {}
    for name, readers, default in ROW.findall(text):
        assert name not in rows, f"{name} twice"
        readers = readers.strip()
        rows[name] = (
            set(PROCESSES) if readers == "all" else set(readers.split(", ")),
            default.strip(),
        )
    return rows


def shown(value: Any) -> str:
    """A default as the table shows it."""
    if isinstance(value, SecretStr):
        return "*(secret)*"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    value = str(value).replace(tempfile.gettempdir(), "$TMPDIR")
    return f"`{value}`" if value else "*(empty)*"


def test_every_setting_is_documented_with_its_default() -> None:
    rows = documented()
    actual: dict[str, tuple[set[str], str]] = {}
    for process, cls in SETTINGS.items():
        for field, info in cls.model_fields.items():
            name = f"DMP_{field.upper()}"
            readers, default = actual.get(name, (set(), shown(info.default)))
            assert default == shown(info.default), f"{name}: two defaults"
            actual[name] = (readers | {process}, default)
    missing = set(actual) - set(rows)
    stale = set(rows) - set(actual)
    assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"
    assert not stale, f"docs/configuration.md lists settings nothing reads: {sorted(stale)}"
    for name, (readers, default) in actual.items():
        assert rows[name] == (readers, default), name


def all_settings() -> set[str]:
    return {f"DMP_{f.upper()}" for cls in SETTINGS.values() for f in cls.model_fields}


def test_the_shared_settings_are_real() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (ROOT / "deploy/k8s/base/platform.env").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names and names <= all_settings()


@pytest.fixture(scope="module")
def compose_env() -> dict[str, set[str]]:
    config = deployfiles.compose_config(ROOT, COMPOSE_FILES[:1], **TEST_SECRETS)
    return {name: set(config["services"][name]["environment"]) for name in PROCESSES}


def kubernetes_env(manifests: Manifests) -> dict[str, set[str]]:
    maps = {c["metadata"]["name"]: set(c.get("data", {})) for c in manifests.of_kind("ConfigMap")}
    result = {}
    for deployment in manifests.of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            names |= maps[source["configMapRef"]["name"]]
        result[deployment["metadata"]["name"]] = names
    return result


@pytest.mark.parametrize("overlay", deployfiles.OVERLAYS)
def test_compose_and_kubernetes_set_the_same_settings(
    compose_env: dict[str, set[str]], overlay: str
) -> None:
    manifests = deployfiles.render(deployfiles.kustomizations(ROOT)[overlay])
    kubernetes = kubernetes_env(manifests)
    for name in PROCESSES:
        assert compose_env[name] == kubernetes[name], (
            name,
            "only in compose:",
            sorted(compose_env[name] - kubernetes[name]),
            "only in Kubernetes:",
            sorted(kubernetes[name] - compose_env[name]),
        )
        # No typo: every variable given is one a service reads.
        assert compose_env[name] <= all_settings(), sorted(compose_env[name] - all_settings())


def test_both_read_the_one_shared_file() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "env_file: [deploy/k8s/base/platform.env]" in compose
    kustomization = (ROOT / "deploy/k8s/base/kustomization.yaml").read_text()
    assert "envs: [platform.env]" in kustomization


def test_secrets_reach_only_the_services_that_use_them(compose_env: dict[str, set[str]]) -> None:
    for name in PROCESSES:
        assert "DMP_LOG_PSEUDONYM_KEY" in compose_env[name]
        assert ("DMP_MONGO_URL" in compose_env[name]) == (name != "gateway"), name
        assert ("DMP_BOOTSTRAP_ADMIN_PASSWORD" in compose_env[name]) == (name == "identity")
        assert ("DMP_SMTP_PASSWORD" in compose_env[name]) == (name == "notify")
