"""Faults on the wire: Toxiproxy in front of each server a test uses, whatever runs it.

A pause holds every byte both ways and loses none: connections open and new ones hang, as a
stopped server looks from outside, and what was held goes through once it ends. A partition
disables the proxy: its connections reset and new ones are refused. The same works for a local
process, a container or a server named by URL, since only the proxy is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import urllib.parse

import httpx

from dmp_stack.infra import InfraError, Started

# A `latency` toxic this long on both streams is a pause: each chunk waits behind it, and
# removing the toxic delivers what it held (Toxiproxy never drops a delayed chunk). An hour
# outlasts any test.
HOLD_MS = 3_600_000
STREAMS = ("upstream", "downstream")
DEFAULT_PORTS = {"mongo": 27017, "nats": 4222, "smtp": 25}


class FaultProxy:
    """A Toxiproxy server's HTTP API: one proxy per server address, named after it."""

    def __init__(self, api_url: str) -> None:
        self._api = httpx.Client(base_url=api_url, timeout=10.0)
        self._proxies: dict[str, list[str]] = {}  # dependency → the proxies in front of it

    def close(self) -> None:
        self._api.close()

    def front(self, dep: Started) -> Started:
        """`dep` as its clients reach it through the proxy: the same server (pid, container)
        at the proxy's addresses; `extra["direct_url"]` is its own URL."""
        extra: dict[str, str] = {}
        if dep.name == "mongo":
            url = self._front_mongo(dep.url)
        elif dep.name == "nats":
            members = [m.strip() for m in dep.url.split(",")]
            names = [f"nats-{i + 1}" for i in range(len(members))] if len(members) > 1 else ["nats"]
            url = ",".join(self._through(n, m, "nats") for n, m in zip(names, members, strict=True))
            for member in url.split(","):
                refuse_advertised_members(member)
        elif dep.name == "smtp":
            url = self._through("smtp", dep.url, "smtp")
            host, port = split_address(urllib.parse.urlsplit(url).netloc, 25)
            extra = {"host": host, "port": str(port)}
        else:
            raise InfraError(f"no fault proxy for {dep.name}")
        return dataclasses.replace(
            dep, url=url, extra={**dep.extra, **extra, "direct_url": dep.url}
        )

    def hold(self, dep: Started) -> None:
        """Every byte to and from `dep` held from now on, none lost."""
        for name in self._of(dep):
            for stream in STREAMS:
                self._api.post(
                    f"/proxies/{name}/toxics",
                    json={
                        "name": f"hold-{stream}",
                        "type": "latency",
                        "stream": stream,
                        "toxicity": 1.0,
                        "attributes": {"latency": HOLD_MS, "jitter": 0},
                    },
                ).raise_for_status()

    def release(self, dep: Started) -> None:
        """What was held goes through, and traffic flows again."""
        for name in self._of(dep):
            for stream in STREAMS:
                self._api.delete(f"/proxies/{name}/toxics/hold-{stream}").raise_for_status()

    def cut(self, dep: Started) -> None:
        """`dep` unreachable: open connections reset, new ones refused."""
        for name in self._of(dep):
            self._api.post(f"/proxies/{name}", json={"enabled": False}).raise_for_status()

    def restore(self, dep: Started) -> None:
        for name in self._of(dep):
            self._api.post(f"/proxies/{name}", json={"enabled": True}).raise_for_status()

    def _of(self, dep: Started) -> list[str]:
        if dep.name not in self._proxies:
            raise InfraError(f"{dep.name} is not behind the fault proxy")
        return self._proxies[dep.name]

    def _through(self, name: str, url: str, dependency: str) -> str:
        """`url` with its address replaced by a new proxy's, which forwards to it."""
        parts = urllib.parse.urlsplit(url)
        userinfo, at, address = parts.netloc.rpartition("@")
        host, port = split_address(address, DEFAULT_PORTS[dependency])
        r = self._api.post(
            "/proxies",
            json={"name": name, "listen": "127.0.0.1:0", "upstream": f"{host}:{port}"},
        )
        r.raise_for_status()
        self._proxies.setdefault(dependency, []).append(name)
        listen = str(r.json()["listen"])  # the port the system gave it
        return parts._replace(netloc=f"{userinfo}{at}{listen}").geturl()

    def _front_mongo(self, url: str) -> str:
        """A MongoDB URL through the proxy, connecting to that one server only: a driver that
        followed a replica set's member list would reach the members directly."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "mongodb" or "," in parts.netloc:
            raise InfraError(
                "the fault proxy fronts one MongoDB server: give DMP_MONGO_URL as "
                "mongodb://host:port/ (a replica set's primary, say), not a member list or SRV"
            )
        proxied = urllib.parse.urlsplit(self._through("mongo", url, "mongo"))
        query = urllib.parse.parse_qsl(proxied.query)
        if not any(key.lower() == "directconnection" for key, _ in query):
            query.append(("directConnection", "true"))
        return proxied._replace(query=urllib.parse.urlencode(query)).geturl()


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `host`, `[v6]:port` or `[v6]` → host and port."""
    host, colon, port = address.rpartition(":")
    if not colon or port.endswith("]"):  # no port given
        return address, default_port
    return host, int(port)


def refuse_advertised_members(url: str) -> None:
    """A NATS server that advertises its cluster's other members (INFO's `connect_urls`)
    would lead clients around the proxy when they reconnect: refused. The harness's own
    cluster is configured with `no_advertise`."""
    address = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    host, port = split_address(address, DEFAULT_PORTS["nats"])
    received = b""
    with (
        contextlib.suppress(OSError),  # no INFO to read (TLS first, say): nothing to judge
        socket.create_connection((host, port), timeout=5) as conn,
    ):
        while b"\r\n" not in received and len(received) < 1 << 16:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    line = received.partition(b"\r\n")[0]
    if not line.startswith(b"INFO "):
        return
    advertised = json.loads(line[5:]).get("connect_urls") or []
    if advertised:
        raise InfraError(
            f"the NATS server behind {address} advertises other members {advertised}: clients "
            "would bypass the fault proxy; set `no_advertise: true` in its cluster block"
        )
