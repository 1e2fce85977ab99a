"""Each process of the local stack holds its own secrets and no other's, by environment only,
and the files that keep them are readable by their owner alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dmp_stack.credentials import PROCESSES, Credentials
from dmp_stack.testing import RunningStack

SECRET_NAME = re.compile(r"KEY|PASSWORD")
# Which secrets each process is given (DMP_SERVICE_PUBLIC_KEYS holds public keys only).
EXPECTED = {
    "gateway": {"DMP_LOG_PSEUDONYM_KEY"},
    "identity": {
        "DMP_LOG_PSEUDONYM_KEY",
        "DMP_NATS_PASSWORD",
        "DMP_IDENTITY_KEY",
        "DMP_SERVICE_PUBLIC_KEYS",
        "DMP_BOOTSTRAP_ADMIN_PASSWORD",
    },
    "dossier": {
        "DMP_LOG_PSEUDONYM_KEY",
        "DMP_NATS_PASSWORD",
        "DMP_DOSSIER_KEY",
        "DMP_SERVICE_ACCOUNT_KEY",
    },
    "audit": {"DMP_LOG_PSEUDONYM_KEY", "DMP_NATS_PASSWORD", "DMP_AUDIT_KEY"},
    "consent": {"DMP_LOG_PSEUDONYM_KEY", "DMP_NATS_PASSWORD", "DMP_SERVICE_ACCOUNT_KEY"},
    "notify": {"DMP_LOG_PSEUDONYM_KEY", "DMP_NATS_PASSWORD", "DMP_SERVICE_ACCOUNT_KEY"},
    "ingest": {"DMP_LOG_PSEUDONYM_KEY", "DMP_NATS_PASSWORD", "DMP_SERVICE_ACCOUNT_KEY"},
    "messaging": {"DMP_LOG_PSEUDONYM_KEY", "DMP_NATS_PASSWORD", "DMP_MESSAGING_KEY"},
    "agenda": {"DMP_LOG_PSEUDONYM_KEY", "DMP_NATS_PASSWORD", "DMP_SERVICE_ACCOUNT_KEY"},
}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode().split("=", 1) for entry in raw if b"=" in entry)
    return {name: value for name, value in pairs}


def every_secret(credentials: Credentials) -> dict[str, str]:
    """Each secret value, named by what it is."""
    named = {"log pseudonym key": credentials.log_pseudonym_key}
    named |= {f"{s} key": k for s, k in credentials.own_keys.items()}
    named |= {f"{s} service-account key": k for s, k in credentials.service_account_keys.items()}
    named |= {f"{s} NATS password": p for s, p in credentials.nats_passwords.items()}
    named["admin password"] = credentials.admin_password
    return named


def test_each_process_holds_its_own_secrets_and_no_other(stack: RunningStack) -> None:
    assert stack.processes.keys() == set(PROCESSES)
    credentials = stack.stack.credentials
    for process, pid in stack.processes.items():
        env = environ(pid)
        dmp = {name for name in env if name.startswith("DMP_")}
        assert {name for name in dmp if SECRET_NAME.search(name)} == EXPECTED[process], process
        assert env == {**env, **credentials.env_for(process)}, process
        assert env.get("DMP_NATS_USER", "") == ("" if process == "gateway" else process)
        mine = set(credentials.env_for(process).values())
        for what, value in every_secret(credentials).items():
            if value and value not in mine:
                assert value not in "\0".join(env.values()), f"{process} holds the {what}"


def test_no_secret_is_in_any_command_line(stack: RunningStack) -> None:
    pids = [*stack.processes.values()]
    pids += [dep.pid for dep in (stack.infra.nats, stack.infra.mongo) if dep.pid is not None]
    values = every_secret(stack.stack.credentials).values()
    for pid in pids:
        argv = Path(f"/proc/{pid}/cmdline").read_text()
        assert not [value for value in values if value in argv], argv


def test_the_nats_configuration_is_private(stack: RunningStack) -> None:
    config = stack.infra.root / "secrets" / "nats.conf"
    assert config.stat().st_mode & 0o777 == 0o600
    assert config.parent.stat().st_mode & 0o077 == 0


def test_make_up_keeps_its_credentials_private_and_across_restarts(tmp_path: Path) -> None:
    """`make up` generates them once: data sealed under them stays readable after a restart."""
    made = Credentials.load_or_create(tmp_path / "secrets")
    assert (tmp_path / "secrets" / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o077 == 0
    assert Credentials.load_or_create(tmp_path / "secrets") == made
    assert made != Credentials(), "each deployment's secrets are its own"


def test_a_service_added_since_gets_its_credentials_and_the_others_keep_theirs(
    tmp_path: Path,
) -> None:
    made = Credentials.load_or_create(tmp_path / "secrets")
    path = tmp_path / "secrets" / "credentials.json"
    older = json.loads(path.read_text())
    del older["nats_passwords"]["agenda"], older["service_account_keys"]["agenda"]
    path.write_text(json.dumps(older))
    again = Credentials.load_or_create(tmp_path / "secrets")
    assert again.nats_passwords["identity"] == made.nats_passwords["identity"]
    assert again.own_keys == made.own_keys
    assert again.nats_passwords["agenda"] and again.service_account_keys["agenda"]
    assert Credentials.load_or_create(tmp_path / "secrets") == again  # kept
