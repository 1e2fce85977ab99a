"""Every secret of one deployment, each given only to the process that needs it, and the NATS
server configuration that gives each service its own identity and subjects.

The local stack (`make up`) and the test harness generate these into their state directory
(files readable by their owner only); services receive theirs by environment, never in argv.
`python -m dmp_stack.credentials` prints a fresh set as `.env` lines for docker compose, and
`--compose-nats` the NATS users of deploy/compose/nats.conf.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dmp_kit.bus import BUS_ACCESS, inbox_prefix
from dmp_kit.service_auth import SERVICE_ROLES, public_key_of

SERVICES = ("identity", "notify", "dossier", "consent", "audit", "ingest", "messaging", "agenda")
PROCESSES = (*SERVICES, "gateway")
# The one key each service keeps for itself (its Settings field, upper-cased with DMP_).
OWN_KEYS = {
    "identity": "identity_key",
    "dossier": "dossier_key",
    "audit": "audit_key",
    "messaging": "messaging_key",
}
CREDENTIALS_FILE = "credentials.json"
NATS_CONFIG_FILE = "nats.conf"


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def write_private(path: Path, text: str) -> None:
    """A file only its owner reads, created so (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


@dataclass
class Credentials:
    """One deployment's secrets."""

    log_pseudonym_key: str = field(default_factory=new_key)
    # A service's own key, by service (identity, dossier, audit, messaging).
    own_keys: dict[str, str] = field(
        default_factory=lambda: {service: new_key() for service in OWN_KEYS}
    )
    # Each service account's private key (consent, ingest, notify, dossier, agenda); identity
    # gets the publics.
    service_account_keys: dict[str, str] = field(
        default_factory=lambda: {service: new_key() for service in SERVICE_ROLES}
    )
    nats_passwords: dict[str, str] = field(
        default_factory=lambda: {service: secrets.token_urlsafe(24) for service in SERVICES}
    )
    # The administrator identity creates at its first start; empty: none (in dev, the
    # published development password).
    admin_password: str = ""

    @classmethod
    def load_or_create(cls, directory: Path) -> Credentials:
        """The directory's credentials, made the first time (data sealed under them survives
        a restart of the stack); a service added since gets its own, kept with the rest."""
        path = directory / CREDENTIALS_FILE
        made = cls()
        if path.exists():
            loaded = cls(**json.loads(path.read_text()))
            added = False
            for name in ("own_keys", "service_account_keys", "nats_passwords"):
                have: dict[str, str] = getattr(loaded, name)
                for service, secret in getattr(made, name).items():
                    added = added or service not in have
                    have.setdefault(service, secret)
            if added:
                write_private(path, json.dumps(asdict(loaded), indent=2))
            return loaded
        write_private(path, json.dumps(asdict(made), indent=2))
        return made

    def service_public_keys(self) -> dict[str, str]:
        return {
            name: public_key_of(base64.b64decode(key))
            for name, key in self.service_account_keys.items()
        }

    def env_for(self, process: str) -> dict[str, str]:
        """The secrets one process is given, as environment variables, and no others."""
        env = {"DMP_LOG_PSEUDONYM_KEY": self.log_pseudonym_key}
        if process == "gateway":
            return env
        env["DMP_NATS_USER"] = process
        env["DMP_NATS_PASSWORD"] = self.nats_passwords[process]
        if process in OWN_KEYS:
            env[f"DMP_{OWN_KEYS[process].upper()}"] = self.own_keys[process]
        if process in self.service_account_keys:
            env["DMP_SERVICE_ACCOUNT_KEY"] = self.service_account_keys[process]
        if process == "identity":
            env["DMP_SERVICE_PUBLIC_KEYS"] = json.dumps(self.service_public_keys())
            if self.admin_password:
                env["DMP_BOOTSTRAP_ADMIN_PASSWORD"] = self.admin_password
        return env

    def dotenv(self) -> str:
        """The same secrets as docker-compose.yml reads them from `.env`, with its MongoDB's
        (an administrator, a replica-set key, one user per service)."""
        public = json.dumps(self.service_public_keys(), separators=(",", ":"))
        lines = [f"DMP_LOG_PSEUDONYM_KEY={self.log_pseudonym_key}"]
        lines += [f"DMP_{OWN_KEYS[s].upper()}={k}" for s, k in self.own_keys.items()]
        lines += [
            f"DMP_{s.upper()}_SERVICE_ACCOUNT_KEY={k}" for s, k in self.service_account_keys.items()
        ]
        lines.append(f"DMP_SERVICE_PUBLIC_KEYS='{public}'")
        lines += [f"{nats_password_variable(s)}={p}" for s, p in self.nats_passwords.items()]
        lines.append(f"DMP_MONGO_ROOT_PASSWORD={secrets.token_urlsafe(24)}")
        # A key file holds base64 characters only.
        lines.append(f"DMP_MONGO_REPLICA_KEY={secrets.token_hex(48)}")
        lines += [f"DMP_MONGO_{s.upper()}_PASSWORD={secrets.token_urlsafe(24)}" for s in SERVICES]
        return "\n".join(lines) + "\n"


def nats_permissions(service: str) -> dict[str, Any]:
    """What the NATS server lets one service publish and subscribe to: its own subjects, the
    JetStream API for its own streams and durable consumers, and its own reply inbox."""
    access = BUS_ACCESS[service]
    publish = [*access.publishes, "$JS.API.INFO"]
    for stream in access.owns_streams:
        publish += [f"$JS.API.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")]
    for stream in sorted({stream for stream, _, _ in access.consumes} - set(access.owns_streams)):
        publish.append(f"$JS.API.STREAM.INFO.{stream}")
    for stream, durable, filter_subject in access.consumes:
        publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            # The one create subject that names the filter, which the server holds the
            # request to: no other filter, and neither the legacy nor the filterless form.
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.{filter_subject}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": [f"{inbox_prefix(service)}.>"]},
    }


def nats_users(passwords: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"user": service, "password": password, "permissions": nats_permissions(service)}
        for service, password in passwords.items()
    ]


def nats_config(
    credentials: Credentials,
    *,
    listen: str,
    store_dir: str,
    superuser: tuple[str, str] | None = None,
    cluster: tuple[str, str, list[str]] | None = None,
    monitor: str = "",
) -> str:
    """A nats-server configuration (JSON is valid NATS configuration): JetStream on disk and
    one user per service. `superuser` (tests only) may do anything, as a forger would.
    `cluster`: (this server's name, its route listener, the routes to all members) — a
    JetStream cluster member that writes to disk before it acknowledges, as production's."""
    users = nats_users(credentials.nats_passwords)
    if superuser is not None:
        users.append({"user": superuser[0], "password": superuser[1]})
    config: dict[str, Any] = {
        "listen": listen,
        "jetstream": {"store_dir": store_dir},
        "authorization": {"users": users},
    }
    if monitor:  # host:port of the server's monitoring endpoint (/healthz)
        config["http"] = monitor
    if cluster is not None:
        name, routes_listen, routes = cluster
        config["server_name"] = name
        config["jetstream"]["sync_interval"] = "always"
        # Clients are given every member's address; told the members' own, a client behind
        # the tests' fault proxy would reconnect around it.
        config["cluster"] = {
            "name": "dmp",
            "listen": routes_listen,
            "routes": routes,
            "no_advertise": True,
        }
    return json.dumps(config, indent=2) + "\n"


def nats_password_variable(service: str) -> str:
    """Where compose and Kubernetes put a service's NATS password for the server to read."""
    return f"DMP_NATS_{service.upper()}_PASSWORD"


def compose_nats_users() -> str:
    """The `authorization` block of deploy/compose/nats.conf: each password is read by the
    server from its environment (`$VARIABLE`), which compose fills from `.env`."""
    users = nats_users({s: f"@{nats_password_variable(s)}@" for s in SERVICES})
    text = json.dumps({"users": users}, indent=2)
    for service in SERVICES:
        variable = nats_password_variable(service)
        text = text.replace(f'"@{variable}@"', f"${variable}")
    return f"authorization: {text}\n"


def helm_nats_users() -> list[dict[str, Any]]:
    """The users of deploy/k8s/external/nats-values.yaml (`config.merge.authorization`): the
    chart writes `<< $VARIABLE >>` unquoted, and the server reads it from its environment."""
    return nats_users({s: f"<< ${nats_password_variable(s)} >>" for s in SERVICES})


def main(argv: list[str]) -> int:
    """Fresh secrets as `.env` lines; with --compose-nats, the authorization block of
    deploy/compose/nats.conf."""
    if argv == ["--compose-nats"]:
        sys.stdout.write(compose_nats_users())
        return 0
    sys.stdout.write(
        "# Secrets for docker compose: append to .env (each service receives only its own).\n"
    )
    sys.stdout.write(Credentials().dotenv())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
