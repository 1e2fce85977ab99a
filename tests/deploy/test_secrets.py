"""Which process gets which secret, in compose and in Kubernetes (the local stack's own test is
libs/stack/tests/test_secrets.py): each service its own, the gateway nothing that decrypts,
signs or mints; and the NATS servers' users are the services' bus access, generated."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from dmp_agenda.config import AgendaSettings
from dmp_audit.config import AuditSettings
from dmp_consent.config import ConsentSettings
from dmp_dossier.config import DossierSettings
from dmp_identity.config import IdentitySettings
from dmp_ingest.config import IngestSettings
from dmp_kit.config import DEV_PASSWORD_PREFIXES, Settings
from dmp_messaging.config import MessagingSettings
from dmp_notify.config import NotifySettings
from dmp_stack import deployfiles
from dmp_stack.credentials import compose_nats_users, helm_nats_users, nats_password_variable
from dmp_stack.deployfiles import COMPOSE_FILES, PROCESSES, SERVICES, TEST_SECRETS

ROOT = deployfiles.repository_root()
SETTINGS: dict[str, type[BaseSettings]] = {
    "audit": AuditSettings,
    "consent": ConsentSettings,
    "dossier": DossierSettings,
    "identity": IdentitySettings,
    "ingest": IngestSettings,
    "notify": NotifySettings,
    "messaging": MessagingSettings,
    "agenda": AgendaSettings,
}
SECRET_NAME = re.compile(r"KEY|PASSWORD|^DMP_MONGO_URL$")
OWN = {
    "gateway": set(),
    "identity": {"DMP_IDENTITY_KEY", "DMP_SERVICE_PUBLIC_KEYS", "DMP_BOOTSTRAP_ADMIN_PASSWORD"},
    "dossier": {"DMP_DOSSIER_KEY", "DMP_SERVICE_ACCOUNT_KEY"},
    "audit": {"DMP_AUDIT_KEY"},
    "consent": {"DMP_SERVICE_ACCOUNT_KEY"},
    "ingest": {"DMP_SERVICE_ACCOUNT_KEY"},
    "notify": {"DMP_SERVICE_ACCOUNT_KEY", "DMP_SMTP_PASSWORD"},
    "messaging": {"DMP_MESSAGING_KEY"},
    "agenda": {"DMP_SERVICE_ACCOUNT_KEY"},
}
# Which secrets each process is given: its own, its NATS user's and its database user's, and
# the log pseudonym key (the one secret the gateway holds: it decrypts, signs, mints nothing).
EXPECTED = {
    name: {"DMP_LOG_PSEUDONYM_KEY"}
    | (set() if name == "gateway" else {"DMP_NATS_PASSWORD", "DMP_MONGO_URL"})
    | OWN[name]
    for name in PROCESSES
}
# Where each compose variable's value comes from in .env.
DOTENV = {
    "DMP_IDENTITY_KEY": "DMP_IDENTITY_KEY",
    "DMP_DOSSIER_KEY": "DMP_DOSSIER_KEY",
    "DMP_AUDIT_KEY": "DMP_AUDIT_KEY",
    "DMP_MESSAGING_KEY": "DMP_MESSAGING_KEY",
    "DMP_SERVICE_PUBLIC_KEYS": "DMP_SERVICE_PUBLIC_KEYS",
    "DMP_LOG_PSEUDONYM_KEY": "DMP_LOG_PSEUDONYM_KEY",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return deployfiles.compose_config(ROOT, COMPOSE_FILES[:1], **TEST_SECRETS)


def test_compose_gives_each_process_its_own_secrets(compose: dict[str, Any]) -> None:
    mine: dict[str, set[str]] = {}
    for name in PROCESSES:
        env = compose["services"][name]["environment"]
        assert {k for k in env if SECRET_NAME.search(k)} == EXPECTED[name], name
        assert env.get("DMP_NATS_USER") == (None if name == "gateway" else name)
        expected_values = {
            TEST_SECRETS[DOTENV.get(k, "")].strip("'") for k in env if DOTENV.get(k) in TEST_SECRETS
        }
        if name != "gateway":
            expected_values.add(TEST_SECRETS[nats_password_variable(name)])
            assert env["DMP_NATS_PASSWORD"] == TEST_SECRETS[nats_password_variable(name)]
        if "DMP_SERVICE_ACCOUNT_KEY" in env:
            key = TEST_SECRETS[f"DMP_{name.upper()}_SERVICE_ACCOUNT_KEY"]
            assert env["DMP_SERVICE_ACCOUNT_KEY"] == key
            expected_values.add(key)
        mine[name] = expected_values
    # No process holds a secret of another's, under any name.
    every = {v for values in mine.values() for v in values}
    for name in PROCESSES:
        text = "\n".join(str(v) for v in compose["services"][name]["environment"].values())
        others = every - mine[name] - mine["gateway"]
        assert not [v for v in others if v in text], name


def secret_refs(deployment: dict[str, Any]) -> dict[str, str]:
    """Variable → the Secret it comes from."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert not [s for s in container.get("envFrom", []) if "secretRef" in s], "by name only"
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


@pytest.mark.parametrize("overlay", deployfiles.OVERLAYS)
def test_kubernetes_gives_each_process_its_own_secret(overlay: str) -> None:
    manifests = deployfiles.render(deployfiles.kustomizations(ROOT)[overlay])
    for deployment in manifests.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        refs = secret_refs(deployment)
        extra = {"DMP_SMTP_USERNAME"} if name == "notify" else set()
        assert set(refs) == EXPECTED[name] | extra, name
        assert refs.pop("DMP_LOG_PSEUDONYM_KEY") == "dmp-log-pseudonyms"
        assert set(refs.values()) <= {f"dmp-{name}"}, name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        users = [e.get("value") for e in container.get("env", []) if e["name"] == "DMP_NATS_USER"]
        assert users == ([] if name == "gateway" else [name])


def test_the_dev_overlay_generates_each_services_secret_and_no_shared_one() -> None:
    dev = deployfiles.render(deployfiles.kustomizations(ROOT)["dev"])
    secrets = {s["metadata"]["name"]: s for s in dev.of_kind("Secret")}
    assert set(secrets) == {"dmp-log-pseudonyms", *(f"dmp-{name}" for name in SERVICES)}
    for deployment in dev.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        required = {
            e["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
            and not e["valueFrom"]["secretKeyRef"].get("optional")
            and e["valueFrom"]["secretKeyRef"]["name"] == f"dmp-{name}"
        }
        if name != "gateway":
            assert set(secrets[f"dmp-{name}"]["data"]) == required, name


def test_the_dev_overlay_secrets_are_refused_outside_dev() -> None:
    """Its values are published: with them, a service started outside dev mode refuses."""
    dev = deployfiles.render(deployfiles.kustomizations(ROOT)["dev"])
    for secret in dev.of_kind("Secret"):
        values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        cls = SETTINGS.get(secret["metadata"]["name"].removeprefix("dmp-"), Settings)
        with pytest.MonkeyPatch.context() as env:
            for name, value in {**values, "DMP_ENV": "prod"}.items():
                env.setenv(name, value)
            with pytest.raises(ValidationError, match="published development"):
                cls()
        # The passwords too, each on its own (the guard knows them by their prefix).
        for setting, prefix in DEV_PASSWORD_PREFIXES.items():
            if (name := f"DMP_{setting.upper()}") in values:
                assert prefix in values[name], (secret["metadata"]["name"], name)


def test_the_compose_nats_server_has_one_user_per_service() -> None:
    text = (ROOT / "deploy/compose/nats.conf").read_text()
    assert compose_nats_users() in text, (
        "regenerate: python -m dmp_stack.credentials --compose-nats"
    )
    compose = deployfiles.compose_config(ROOT, COMPOSE_FILES[:1], **TEST_SECRETS)
    nats_env = compose["services"]["nats"]["environment"]
    for name in SERVICES:
        variable = nats_password_variable(name)
        assert nats_env[variable] == TEST_SECRETS[variable]


def test_the_kubernetes_nats_server_has_one_user_per_service() -> None:
    values = yaml.safe_load((ROOT / "deploy/k8s/external/nats-values.yaml").read_text())
    assert values["config"]["merge"]["authorization"]["users"] == helm_nats_users()
    for name in SERVICES:
        ref = values["container"]["env"][nats_password_variable(name)]["valueFrom"]
        assert ref["secretKeyRef"] == {"name": "dmp-nats-users", "key": name}


def test_each_service_has_its_own_database_user_in_kubernetes() -> None:
    mongo = yaml.safe_load((ROOT / "deploy/k8s/external/mongodb-community.yaml").read_text())
    users = {u["name"]: u for u in mongo["spec"]["users"]}
    assert set(users) == set(SERVICES)
    for name, user in users.items():
        assert user["roles"] == [{"name": "readWrite", "db": name}]
        assert user["passwordSecretRef"]["name"] == f"dmp-mongodb-{name}"
    assert mongo["spec"]["security"]["authentication"]["modes"] == ["SCRAM"]


def test_no_master_key_anywhere(compose: dict[str, Any]) -> None:
    for manifests in (
        deployfiles.render(deployfiles.kustomizations(ROOT)[o]) for o in deployfiles.OVERLAYS
    ):
        assert "MASTER_KEY" not in manifests.text
    assert not [n for n in compose["services"] if "DMP_MASTER_KEY" in str(compose["services"][n])]
