"""`dmp-probe`, the containers' health check, asked of the real running services."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dmp_kit.probe import local_address, main
from dmp_stack.infra import free_port
from dmp_stack.testing import RunningStack

SERVICES = ("identity", "dossier", "consent", "audit", "notify", "ingest", "messaging", "agenda")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_ready_and_live(stack: RunningStack, service: str) -> None:
    address = f"127.0.0.1:{stack.stack.ports.grpc[service]}"
    assert main(["--service", service, "--address", address]) == 0
    assert main(["--service", service, "--address", address, "--live"]) == 0


def test_the_gateway_is_probed_over_http(stack: RunningStack) -> None:
    address = stack.url.removeprefix("http://")
    assert main(["--service", "gateway", "--address", address]) == 0
    assert main(["--service", "gateway", "--address", address, "--live"]) == 0


def test_nothing_listening_is_unhealthy() -> None:
    address = f"127.0.0.1:{free_port()}"
    assert main(["--service", "identity", "--address", address, "--timeout", "0.5"]) == 1
    assert main(["--service", "gateway", "--address", address, "--timeout", "0.5"]) == 1


def test_the_console_script_reads_its_service_from_the_environment(
    stack: RunningStack,
) -> None:
    port = stack.stack.ports.grpc["consent"]
    env = {"DMP_SERVICE": "consent", "DMP_GRPC_LISTEN": f"[::]:{port}", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "dmp_kit.probe"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "SERVING" in done.stdout


def test_an_unknown_service_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--service", "nobody"])
    assert exit_.value.code == 2


def test_local_address_follows_the_service_settings() -> None:
    assert local_address("audit", {}) == "127.0.0.1:50054"
    assert local_address("audit", {"DMP_GRPC_LISTEN": "0.0.0.0:7000"}) == "127.0.0.1:7000"
    assert local_address("gateway", {"DMP_HTTP_PORT": "8080"}) == "127.0.0.1:8080"
