"""The harness's fault proxy: a pause holds a MongoDB round trip and a NATS publish until it
ends and then delivers every byte; a partition resets and refuses; the same for servers named by
DMP_MONGO_URL / DMP_NATS_URL; a NATS server that would lead clients around it is refused."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from pymongo import MongoClient

from dmp_stack.fault_proxy import FaultProxy, split_address
from dmp_stack.infra import (
    InfraError,
    Started,
    free_port,
    nats_binary,
    spawn,
    start_toxiproxy,
    wait_port,
)
from dmp_stack.stack import stop_pid, stop_started
from dmp_stack.testing import Infra, own_infra, until


def address(url: str, default_port: int) -> tuple[str, int]:
    return split_address(urllib.parse.urlsplit(url).netloc.rpartition("@")[2], default_port)


def first_line(where: tuple[str, int], timeout: float) -> bytes:
    """What a server says first on a new connection (NATS's INFO, SMTP's greeting); b"" if
    nothing within `timeout`."""
    with socket.create_connection(where, timeout=5) as conn:
        conn.settimeout(timeout)
        try:
            return conn.recv(4096)
        except TimeoutError:
            return b""


def nats_direct_url(infra: Infra) -> str:
    """The tests' NATS user at the server's own address, around the proxy."""
    proxied = urllib.parse.urlsplit(infra.nats.url)
    direct = urllib.parse.urlsplit(infra.nats.extra["direct_url"])
    userinfo = proxied.netloc.rpartition("@")[0]
    return direct._replace(netloc=f"{userinfo}@{direct.netloc}").geturl()


def held_round_trip(infra: Infra) -> None:
    """A 4 MiB insert while the database is paused: it neither completes nor reaches the
    server until the pause ends; then it does, byte for byte."""
    payload = secrets.token_bytes(4 << 20)
    name = f"proxy_{secrets.token_hex(4)}"
    client: MongoClient[dict[str, Any]]
    direct: MongoClient[dict[str, Any]]
    with (
        MongoClient(infra.mongo.url, socketTimeoutMS=60_000) as client,
        MongoClient(infra.mongo.extra["direct_url"]) as direct,
    ):
        client[name]["held"].insert_one({"_id": "warm"})  # a pooled connection, open
        outcome: list[object] = []
        infra.pause(infra.mongo)
        try:
            writer = threading.Thread(
                target=lambda: outcome.append(
                    client[name]["held"].insert_one({"_id": "held", "payload": payload})
                )
            )
            started = time.monotonic()
            writer.start()
            writer.join(2.0)
            assert writer.is_alive() and not outcome, "the round trip went through the pause"
            assert direct[name]["held"].find_one({"_id": "held"}) is None, "a byte got through"
        finally:
            infra.resume(infra.mongo)
        writer.join(30)
        assert outcome and time.monotonic() - started >= 2.0
        stored = direct[name]["held"].find_one({"_id": "held"})
        assert stored is not None and stored["payload"] == payload
        direct.drop_database(name)


def test_a_paused_database_holds_a_round_trip_and_delivers_it_whole(infra: Infra) -> None:
    held_round_trip(infra)


async def test_a_paused_nats_holds_publishes_and_delivers_every_byte(infra: Infra) -> None:
    subject = f"faultproxy.{secrets.token_hex(4)}"
    sent = [secrets.token_bytes(10_000) for _ in range(200)]
    received: list[bytes] = []
    direct = await nats.connect(nats_direct_url(infra))
    client = await nats.connect(infra.nats.url)
    js = client.jetstream()
    stream = f"FAULTPROXY_{secrets.token_hex(4)}"
    try:
        await js.add_stream(name=stream, subjects=[f"{subject}.stream"])

        async def collect(msg: Any) -> None:
            received.append(msg.data)

        await direct.subscribe(subject, cb=collect)
        await direct.flush()
        infra.pause(infra.nats)
        try:
            for data in sent:
                await client.publish(subject, data)
            flushed = asyncio.create_task(client.flush(timeout=60))
            acked = asyncio.create_task(js.publish(f"{subject}.stream", b"held", timeout=60))
            # a new connection hangs too: the server's INFO does not come
            host, port = address(infra.nats.url, 4222)
            greeting = await asyncio.to_thread(first_line, (host, port), 1.0)
            await asyncio.sleep(1.0)
            assert greeting == b""
            assert not flushed.done() and not acked.done()
            assert received == [], "a message got through the pause"
        finally:
            infra.resume(infra.nats)
        await flushed
        assert (await acked).stream == stream
        assert await asyncio.to_thread(until, lambda: len(received) >= len(sent), 30)
        assert received == sent
        assert (await direct.jetstream().stream_info(stream)).state.messages == 1
    finally:
        await client.jetstream().delete_stream(stream)
        await client.close()
        await direct.close()


def test_a_partition_resets_and_refuses_until_healed(infra: Infra) -> None:
    for dep, port in ((infra.nats, 4222), (infra.smtp, 25), (infra.mongo, 27017)):
        where = address(dep.url, port)
        with socket.create_connection(where, timeout=5) as before:
            infra.partition(dep)
            try:
                before.settimeout(5)
                try:
                    while before.recv(4096):  # what the server said at first, then the end
                        pass
                except ConnectionResetError:
                    pass
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(where, timeout=5)
            finally:
                infra.heal(dep)
        if dep is not infra.mongo:  # NATS and SMTP speak first
            assert first_line(where, 5.0), f"{dep.name} did not answer once healed"
        else:
            socket.create_connection(where, timeout=5).close()


@pytest.fixture(scope="module")
def by_url(infra: Infra) -> Iterator[Infra]:
    """Servers given by URL, as a MongoDB or NATS elsewhere would be: the session's own, by
    their direct addresses; a proxy of this infra's own fronts them."""
    saved = {k: os.environ.get(k) for k in ("DMP_MONGO_URL", "DMP_NATS_URL")}
    os.environ["DMP_MONGO_URL"] = infra.mongo.extra["direct_url"]
    os.environ["DMP_NATS_URL"] = nats_direct_url(infra)
    try:
        with own_infra("dmp-by-url-") as given:
            yield given
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_servers_given_by_url_are_fronted_and_paused_the_same(by_url: Infra) -> None:
    assert by_url.mongo.source == "DMP_MONGO_URL" and by_url.mongo.pid is None
    assert by_url.mongo.url != by_url.mongo.extra["direct_url"]
    assert "directConnection=true" in by_url.mongo.url
    held_round_trip(by_url)
    assert by_url.nats.source == "DMP_NATS_URL"
    where = address(by_url.nats.url, 4222)
    by_url.pause(by_url.nats)
    try:
        assert first_line(where, 1.0) == b""
    finally:
        by_url.resume(by_url.nats)
    assert first_line(where, 5.0).startswith(b"INFO ")


def test_a_member_list_is_refused_for_mongodb(tmp_path: Path) -> None:
    proxy = start_toxiproxy(tmp_path)
    faults = FaultProxy(proxy.url)
    try:
        for url in ("mongodb://127.0.0.1:1,127.0.0.1:2/", "mongodb+srv://db.example.org/"):
            with pytest.raises(InfraError, match="one MongoDB server"):
                faults.front(Started("mongo", url, "DMP_MONGO_URL"))
    finally:
        faults.close()
        stop_started(proxy)


def test_a_nats_cluster_that_advertises_its_members_is_refused(tmp_path: Path) -> None:
    """Two routed nats-servers at their defaults tell each client of the other's address."""
    ports, routes = [free_port(), free_port()], [free_port(), free_port()]
    pids = []
    try:
        for i in range(2):
            log = tmp_path / f"nats-{i}.log"
            argv = [str(nats_binary()), "-a", "127.0.0.1", "-p", str(ports[i])]
            argv += ["--cluster_name", "t", "--cluster", f"nats://127.0.0.1:{routes[i]}"]
            argv += ["--routes", f"nats://127.0.0.1:{routes[1 - i]}"]
            proc = spawn(argv, log)
            pids.append(proc.pid)
            wait_port(ports[i], 30, proc, "nats-server", log)
        assert until(lambda: b"connect_urls" in first_line(("127.0.0.1", ports[0]), 2.0), 30)
        proxy = start_toxiproxy(tmp_path)
        faults = FaultProxy(proxy.url)
        try:
            url = ",".join(f"nats://127.0.0.1:{port}" for port in ports)
            with pytest.raises(InfraError, match="no_advertise"):
                faults.front(Started("nats", url, "DMP_NATS_URL"))
        finally:
            faults.close()
            stop_started(proxy)
    finally:
        for pid in pids:
            stop_pid(pid)


def test_addresses_are_split_with_their_default_port() -> None:
    assert split_address("db.example.org:27018", 27017) == ("db.example.org", 27018)
    assert split_address("db.example.org", 27017) == ("db.example.org", 27017)
    assert split_address("[::1]:4223", 4222) == ("[::1]", 4223)
    assert split_address("[::1]", 4222) == ("[::1]", 4222)
