"""docker-compose.yml as Docker would run it (the real compose binary resolves it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dmp_kit.config import DEFAULT_PORTS
from dmp_stack import deployfiles, monitoring
from dmp_stack.deployfiles import COMPOSE_FILES, PROCESSES, TEST_SECRETS

ROOT = deployfiles.repository_root()
INFRASTRUCTURE = ("mongo", "nats", "mailpit")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return deployfiles.compose_config(ROOT, COMPOSE_FILES[:1], **TEST_SECRETS)


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return deployfiles.compose_config(ROOT, COMPOSE_FILES, **TEST_SECRETS)


def test_the_whole_platform_is_there(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {*PROCESSES, *INFRASTRUCTURE}


@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES])
def test_every_service_has_a_healthcheck_and_waits_for_health(files: tuple[str, ...]) -> None:
    config = deployfiles.compose_config(ROOT, files, **TEST_SECRETS)
    for name, service in config["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        for dependency, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy", (name, dependency)


def test_the_start_order(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in deployfiles.SERVICES:
        assert {"mongo", "nats"} <= set(services[name]["depends_on"]), name
    assert "mailpit" in services["notify"]["depends_on"]
    assert set(services["gateway"]["depends_on"]) == set(deployfiles.SERVICES)
    # Our processes probe themselves with the kit's command (gRPC health; HTTP for the gateway).
    for name in PROCESSES:
        assert services[name]["healthcheck"]["test"] == ["CMD", "dmp-probe"], name


def test_only_the_gateway_and_the_mail_ui_are_published(config: dict[str, Any]) -> None:
    published = {
        name: [(p.get("host_ip"), p["published"], p["target"]) for p in service.get("ports", [])]
        for name, service in config["services"].items()
        if service.get("ports")
    }
    # On loopback unless the operator says otherwise (a TLS proxy goes in front).
    assert published == {
        "gateway": [("127.0.0.1", "8000", 8000)],
        "mailpit": [("127.0.0.1", "8025", 8025)],
    }


def test_development_publishes_the_database_and_nats_on_loopback_only(dev: dict[str, Any]) -> None:
    for name in ("mongo", "nats"):
        assert {p["host_ip"] for p in dev["services"][name]["ports"]} == {"127.0.0.1"}
    for name in PROCESSES:
        assert dev["services"][name]["environment"]["DMP_ENV"] == "dev"


def test_our_containers_are_locked_down(config: dict[str, Any]) -> None:
    for name in PROCESSES:
        service = config["services"][name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["build"]["args"] == {"SERVICE": name}
        assert service["restart"] == "unless-stopped"


def test_data_lives_on_volumes(config: dict[str, Any]) -> None:
    def volumes(name: str) -> dict[str, str]:
        return {
            v["target"]: v["source"]
            for v in config["services"][name].get("volumes", [])
            if v["type"] == "volume"
        }

    assert set(volumes("mongo")) == {"/data/db", "/data/configdb"}
    assert set(volumes("nats")) == {"/data"}
    assert volumes("ingest") == {"/var/lib/dmp/spool": "ingest-spool"}


def test_mongo_is_a_replica_set_and_nats_syncs_every_write(config: dict[str, Any]) -> None:
    mongo = config["services"]["mongo"]
    assert mongo["image"].startswith("mongo:7")
    assert mongo["command"][:2] == ["--replSet", "rs0"]
    assert "replSetInitiate" in " ".join(mongo["healthcheck"]["test"])
    url = config["services"]["dossier"]["environment"]["DMP_MONGO_URL"]
    assert "replicaSet=rs0" in url and "w=majority" in url
    nats_conf = (ROOT / "deploy/compose/nats.conf").read_text()
    assert "sync_interval: always" in nats_conf


def test_secrets_come_from_the_env_file_only(config: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "DMP_LOG_PSEUDONYM_KEY: ${DMP_LOG_PSEUDONYM_KEY:?" in text
    for name in PROCESSES:
        environment = config["services"][name]["environment"]
        assert environment["DMP_LOG_PSEUDONYM_KEY"] == TEST_SECRETS["DMP_LOG_PSEUDONYM_KEY"]
    # .env is never committed, nor sent to an image build.
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    example = (ROOT / ".env.example").read_text()
    for name in TEST_SECRETS:
        assert f"\n{name}=\n" in example, name  # empty: the operator generates it
    assert "DMP_ENV=prod" in example


def test_mongo_requires_authentication_and_each_service_has_its_own_user(
    config: dict[str, Any],
) -> None:
    mongo = config["services"]["mongo"]
    assert (
        mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD"]
        == TEST_SECRETS["DMP_MONGO_ROOT_PASSWORD"]
    )
    # A replica set with authentication: its members prove themselves with a key file.
    assert "--keyFile" in mongo["command"]
    users = (ROOT / "deploy/compose/mongo-users.js").read_text()
    assert 'role: "readWrite", db: service' in users
    for name in PROCESSES:
        if name == "gateway":
            assert "DMP_MONGO_URL" not in config["services"][name]["environment"]
            continue
        url = config["services"][name]["environment"]["DMP_MONGO_URL"]
        password = TEST_SECRETS[f"DMP_MONGO_{name.upper()}_PASSWORD"]
        assert url.startswith(f"mongodb://{name}:{password}@mongo:27017/"), name
        assert f'"{name}"' in users
        assert mongo["environment"][f"DMP_MONGO_{name.upper()}_PASSWORD"] == password


TRACING = ("otel-collector", "jaeger")


@pytest.fixture(scope="module")
def observability() -> dict[str, Any]:
    return deployfiles.compose_config(
        ROOT, COMPOSE_FILES[:1], (deployfiles.OBSERVABILITY_PROFILE,), **TEST_SECRETS
    )


def test_prometheus_and_grafana_come_with_their_profile_only(
    config: dict[str, Any], observability: dict[str, Any]
) -> None:
    assert not {"prometheus", "grafana", *TRACING} & set(config["services"])
    services = observability["services"]
    assert set(services) == {*PROCESSES, *INFRASTRUCTURE, "prometheus", "grafana", *TRACING}
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["healthcheck"]["test"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        # Published on loopback, as the gateway is.
        assert [p["host_ip"] for p in service["ports"]] == ["127.0.0.1"], name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    # Grafana: viewers only, nobody signs in (the dashboards are code).
    environment = services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert environment["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    assert environment["GF_AUTH_BASIC_ENABLED"] == "false"


def test_prometheus_scrapes_every_process_on_its_metrics_port(
    observability: dict[str, Any],
) -> None:
    """One job per process, named after it; a service's metrics port is its gRPC port + 1000
    (DMP_METRICS_LISTEN's default), the gateway's its HTTP port."""
    prometheus = observability["services"]["prometheus"]
    mounts = {v["target"]: v["source"] for v in prometheus["volumes"] if v["type"] == "bind"}
    directory = Path(mounts["/etc/prometheus"])
    assert directory == ROOT / monitoring.PROMETHEUS_CONFIG.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((directory / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    for name in PROCESSES:
        port = 8000 if name == "gateway" else DEFAULT_PORTS[name] + 1000
        assert jobs[name] == [f"{name}:{port}"], name
        assert "DMP_METRICS_LISTEN" not in observability["services"][name]["environment"]


def test_grafana_provisions_the_dashboards_from_the_repository(
    observability: dict[str, Any],
) -> None:
    grafana = observability["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards/dmp.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == ROOT / monitoring.DASHBOARDS
    assert provider["allowUiUpdates"] is False
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / monitoring.DASHBOARDS / Path(home).name).exists()


def test_traces_go_through_the_collector_to_jaeger_with_the_profile_only(
    config: dict[str, Any], observability: dict[str, Any]
) -> None:
    """The services send no traces unless DMP_OTLP_ENDPOINT is set; with the profile, the
    collector (its config from the repository: identifying attributes dropped once more, memory
    capped) forwards them to Jaeger, whose UI alone is published, on loopback."""
    for name in PROCESSES:
        assert config["services"][name]["environment"]["DMP_OTLP_ENDPOINT"] == "", name
    services = observability["services"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    for service in (collector, jaeger):
        assert service["cap_drop"] == ["ALL"] and service["read_only"] is True
        assert "no-new-privileges:true" in service["security_opt"]
    assert "ports" not in collector
    assert [(p["host_ip"], p["target"]) for p in jaeger["ports"]] == [("127.0.0.1", 16686)]
    mounts = {v["target"]: Path(v["source"]) for v in collector["volumes"] if v["type"] == "bind"}
    conf = yaml.safe_load(mounts["/etc/otelcol/config.yaml"].read_text())
    assert collector["environment"]["DMP_TRACES_BACKEND"] == "http://jaeger:4318"
    pipeline = conf["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(conf[kind]), kind  # each one is configured
    assert pipeline["processors"][0] == "memory_limiter"  # first, as the collector asks
    dropped = {a["key"] for a in conf["processors"]["attributes/scrub"]["actions"]}
    assert {"db.statement", "url.full", "url.query", "http.target"} <= dropped
    assert conf["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
