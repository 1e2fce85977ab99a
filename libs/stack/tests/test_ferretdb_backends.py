"""FerretDB's two backends, each started directly whatever database the session itself uses:
on a PostgreSQL cluster of its own (the default) it starts, keeps what is written with the
features the code relies on, answers on a Unix socket when asked, refuses a duplicate on a
unique index, keeps the cluster's password out of sight, and stops both servers; on SQLite
(DMP_FERRETDB_BACKEND=sqlite, the fallback) it does the same round trip."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pymongo
import pytest
from pymongo import MongoClient

from dmp_stack.infra import InfraError, free_port, mongo_choice, postgres_bin, start_ferretdb
from dmp_stack.stack import alive, stop_started


def test_ferretdb_on_postgresql_round_trip() -> None:
    try:
        postgres_bin()
    except InfraError as exc:
        if os.environ.get("CI"):
            raise  # .ci/run installs PostgreSQL's server programs
        pytest.skip(str(exc))
    state = Path(tempfile.mkdtemp(prefix="dmp-pg-"))
    try:
        mongo = start_ferretdb(state, free_port(), "postgresql", state / "ferretdb.sock")
        assert mongo.pid is not None and len(mongo.also) == 1
        try:
            assert "postgresql" in mongo.source and alive(mongo.also[0])
            check_secret(state, mongo.pid, mongo.also[0])
            check_round_trip(mongo.url)
            check_unix_socket(mongo.extra["unix_url"], mongo.url)
            check_filters_use_an_index(state, mongo.url)
        finally:
            stop_started(mongo)  # FerretDB, then the PostgreSQL under it
        assert not alive(mongo.pid) and not alive(mongo.also[0])
    finally:
        shutil.rmtree(state, ignore_errors=True)


def check_unix_socket(unix_url: str, tcp_url: str) -> None:
    """Asked for one, FerretDB also listens on a Unix socket (bench/db_client.py): what is
    written through it is read over TCP."""
    assert unix_url.startswith("mongodb://%2F") and unix_url.endswith(".sock/")
    with MongoClient(unix_url) as over_socket, MongoClient(tcp_url) as over_tcp:
        over_socket["dmp_unix_check"]["docs"].insert_one({"_id": "via-socket", "n": 1})
        assert over_tcp["dmp_unix_check"]["docs"].find_one({"_id": "via-socket"}) == {
            "_id": "via-socket",
            "n": 1,
        }


def check_secret(state: Path, *pids: int) -> None:
    """The cluster's password stays out of the process list, and nobody gets in without it."""
    password = (state / "data" / "postgres.password").read_text().strip()
    assert len(password) >= 24
    for pid in pids:
        assert password not in Path(f"/proc/{pid}/cmdline").read_text()
    port = next(
        line.split()[-1]
        for line in (state / "logs" / "postgres.log").read_text().splitlines()
        if "listening on IPv4 address" in line
    )
    psql = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "ferretdb", "-w"]
    refused = subprocess.run(
        [*psql, "-c", "select 1", "postgres"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
    )
    assert refused.returncode != 0 and "password" in refused.stderr, refused.stderr


def check_filters_use_an_index(state: Path, url: str) -> None:
    """The SQL FerretDB sends for a top-level equality (the field as a parameter, `@>`) is
    answered from an index for an indexed field and for `_id`, also once the statement is
    prepared (PostgreSQL would switch to a generic plan after five runs) — not by reading
    the whole table, as the btree FerretDB creates alone would have it."""
    with MongoClient(url) as client:
        docs = client["dmp_pg_check"]["patients_docs"]
        docs.create_index([("ins", 1), ("at", -1)])
        docs.insert_many(
            [{"_id": f"d{i}", "ins": f"p{i % 500}", "at": i, "t": "x" * 200} for i in range(5000)]
        )
    password = (state / "data" / "postgres.password").read_text().strip()
    port = next(
        line.split()[-1]
        for line in (state / "logs" / "postgres.log").read_text().splitlines()
        if "listening on IPv4 address" in line
    )

    def psql(*commands: str) -> str:
        argv = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "ferretdb"]
        for command in commands:
            argv += ["-c", command]
        done = subprocess.run(
            [*argv, "-At", "postgres"],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": password},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = psql(
        "select schemaname || '.' || tablename from pg_tables where schemaname = 'dmp_pg_check'"
        " and tablename like 'patients_docs%'"
    ).strip()
    assert table
    # No pending list for queries to read through: rows go straight into the GIN indexes.
    gin_options = (
        "select c.reloptions from pg_index i join pg_class c on c.oid = i.indexrelid"  # noqa: S608
        f" join pg_am a on a.oid = c.relam where i.indrelid = '{table}'::regclass"
        " and a.amname = 'gin'"
    )
    options = psql(gin_options).split()
    # _id, and each field of the compound index (ins, at)
    assert len(options) == 3 and all("fastupdate=off" in o for o in options), options
    for field, value in (("ins", '"p7"'), ("_id", '"d42"')):
        runs = [f"explain execute q('{field}', '{value}')" for _ in range(7)]
        plans = psql(
            "analyze " + table,
            f"prepare q(text, jsonb) as select _jsonb from {table} where _jsonb->$1 @> $2",  # noqa: S608 (a table name read from the catalog)
            *runs,
        )
        last = plans.strip().split("PREPARE")[-1]
        assert "Index Scan" in last and "Seq Scan" not in last, plans


def check_round_trip(url: str) -> None:
    with MongoClient(url) as client:
        docs = client["dmp_pg_check"]["docs"]
        docs.create_index("key", unique=True)
        docs.insert_many([{"_id": f"d{i}", "key": f"k{i}", "n": i % 3} for i in range(50)])
        docs.update_one({"key": "k7"}, {"$set": {"state": "seen"}})
        assert docs.find_one({"_id": "d7"}, {"_id": 0, "state": 1}) == {"state": "seen"}
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            docs.insert_one({"_id": "other", "key": "k7"})
        counts = {
            g["_id"]: g["count"]
            for g in docs.aggregate([{"$group": {"_id": "$n", "count": {"$sum": 1}}}])
        }
        assert counts == {0: 17, 1: 17, 2: 16}
        assert docs.count_documents({}) == 50


def test_ferretdb_on_sqlite_round_trip(tmp_path: Path) -> None:
    mongo = start_ferretdb(tmp_path, free_port(), "sqlite")
    try:
        assert "sqlite" in mongo.source and mongo.also == []
        check_round_trip(mongo.url)
        assert list((tmp_path / "data" / "ferretdb").glob("*.sqlite")), "SQLite files written"
    finally:
        stop_started(mongo)
    assert mongo.pid is not None and not alive(mongo.pid)


def test_postgresql_is_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DMP_MONGO_URL", "DMP_FERRETDB_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    if mongo_choice().startswith("ferretdb"):
        assert mongo_choice() == "ferretdb postgresql"
    monkeypatch.setenv("DMP_FERRETDB_BACKEND", "sqlite")
    if mongo_choice().startswith("ferretdb"):
        assert mongo_choice() == "ferretdb sqlite"


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="expected 'sqlite' or 'postgresql'"):
        start_ferretdb(tmp_path, free_port(), "mysql")
