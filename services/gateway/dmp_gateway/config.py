"""The gateway's settings."""

from __future__ import annotations

from pydantic import Field

from dmp_kit.config import Settings


class GatewaySettings(Settings):
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's
    # forwarded_allow_ips): the reverse proxy in front. "*" only where nothing else can reach
    # the gateway (Kubernetes: its NetworkPolicy admits the ingress controller alone).
    trusted_proxies: str = "127.0.0.1"
    # Largest request body accepted by JSON routes (uploads have their own limits).
    max_body_bytes: int = 1024 * 1024
    # A document upload carries up to this many bytes of content, base64-encoded in JSON.
    max_document_bytes: int = 20 * 1024 * 1024
    # A claims batch is streamed through, never held: this bounds what one request may send.
    max_batch_bytes: int = 4 * 1024 * 1024 * 1024
    readiness_timeout_seconds: float = 1.0
    # Browser origins allowed to call the API from another origin (comma-separated). Empty:
    # none, the API answers no cross-origin request (the portal is served from this origin).
    cors_origins: str = ""
    # Per client address on the public authentication routes (login, code, refresh, token);
    # this stops one address spraying many logins.
    auth_rate_limit: str = "30/minute"
    # Per account (login, code challenge, refresh token, client) on those routes: tight, so
    # that many addresses together cannot hammer one account. Identity's lockouts add to it.
    account_rate_limit: str = "10/minute"
    # Per client address on every other route: generous, a hospital's staff share an address.
    address_rate_limit: str = "1200/minute"
    # Overload (admission.py): at most this many API requests at work at once in this process
    # (on a 2-core machine the consult's throughput stops growing at 4 to 8; more requests at
    # once only make each longer);
    requests_in_flight: int = Field(8, ge=1)
    # beyond them, a request waits for a slot if it can expect one within this time, judged
    # from the slots' recent turnover (it gives up at four times that), and up to `queued` of
    # them wait; any other is refused at once: 503 `overloaded` with Retry-After.
    queue_wait_seconds: float = Field(0.1, ge=0)
    requests_queued: int = Field(64, ge=0)
    # While every slot is taken, an address with this many requests at work or waiting is
    # refused at once, so that one client cannot starve the others (half the slots).
    requests_per_address: int = Field(4, ge=1)
    overload_retry_after_seconds: int = Field(1, ge=1)
    # What one request may take in all, its wait for a slot included: every call to a service
    # gets what remains of it (at most DMP_GRPC_DEADLINE_SECONDS), so a slow service cannot
    # hold work past the time anyone waits for it.
    request_deadline_seconds: float = Field(5.0, gt=0)
