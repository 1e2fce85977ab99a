"""Starts the gateway (uvicorn)."""

from __future__ import annotations

import uvicorn

from dmp_gateway.app import create_app
from dmp_gateway.config import GatewaySettings
from dmp_kit import tracing
from dmp_kit.runtime import configure_logging, tune_gc


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings)
    tracing.configure(
        "gateway", settings.otlp_endpoint, settings.trace_file, settings.trace_sample_ratio
    )
    app = create_app(settings)
    tune_gc()  # as the services (dmp_kit.runtime.run_service)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        server_header=False,
        loop="uvloop",  # as the services (dmp_kit.runtime.run_service)
    )


if __name__ == "__main__":
    main()
