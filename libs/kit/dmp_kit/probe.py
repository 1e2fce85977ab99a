"""`dmp-probe`: is this container's process live, or ready? For Docker's HEALTHCHECK and scripts.

A gRPC service is asked through the standard health protocol (grpc.health.v1): readiness is
the overall status ("": SERVING while MongoDB and NATS answer), liveness the `liveness`
service (SERVING while the process runs and its event loop answers). The gateway is HTTP:
`/readyz` and `/healthz`. Which process this container runs comes from `DMP_SERVICE` (set by
the image); the address from the same settings the service reads. Exit 0 means healthy.

Kubernetes does not need this command: its probes speak gRPC and HTTP natively.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dmp_kit.config import DEFAULT_PORTS

LIVENESS = "liveness"


def grpc_status(address: str, service: str, timeout: float) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def http_status(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (loopback URL)
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def local_address(service: str, environ: dict[str, str]) -> str:
    """Where this container's own service listens, on loopback."""
    if service == "gateway":
        return f"127.0.0.1:{environ.get('DMP_HTTP_PORT', '8000')}"
    listen = environ.get("DMP_GRPC_LISTEN", "")
    port = listen.rsplit(":", 1)[1] if listen else str(DEFAULT_PORTS[service])
    return f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmp-probe", description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="liveness instead of readiness")
    parser.add_argument(
        "--service", default=os.environ.get("DMP_SERVICE", ""), help="default: $DMP_SERVICE"
    )
    parser.add_argument("--address", default="", help="host:port (default: this container's)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.service != "gateway" and args.service not in DEFAULT_PORTS:
        parser.error(f"unknown service {args.service!r} (set DMP_SERVICE or --service)")
    address = args.address or local_address(args.service, dict(os.environ))
    try:
        if args.service == "gateway":
            path = "/healthz" if args.live else "/readyz"
            code = http_status(f"http://{address}{path}", args.timeout)
            print(f"gateway {path}: HTTP {code}")
            return 0 if code == 200 else 1
        status = grpc_status(address, LIVENESS if args.live else "", args.timeout)
    except (grpc.RpcError, OSError) as exc:
        print(f"{args.service} at {address}: no answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"{args.service}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
