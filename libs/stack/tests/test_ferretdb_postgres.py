"""FerretDB on a PostgreSQL cluster of its own (DMP_FERRETDB_BACKEND=postgresql, used by the
long runs): it starts, keeps what is written with the features the code relies on, refuses a
duplicate on a unique index, and `own_infra` stops both servers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pymongo
import pytest
from pymongo import MongoClient

from dmp_stack.infra import InfraError, postgres_bin
from dmp_stack.stack import alive
from dmp_stack.testing import own_infra


def _postgres_present() -> bool:
    try:
        postgres_bin()
    except InfraError:
        return False
    return True


def use_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("mongod") or os.environ.get("DMP_MONGO_URL"):
        pytest.skip("a real MongoDB is in use; FerretDB is not started")
    if not _postgres_present():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server programs are missing; .ci/run installs them")
        pytest.skip("PostgreSQL's server programs are not installed")
    monkeypatch.setenv("DMP_FERRETDB_BACKEND", "postgresql")


def test_ferretdb_on_postgresql_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    use_postgresql(monkeypatch)
    with own_infra("dmp-pg-") as infra:
        mongo = infra.mongo
        assert "postgresql" in mongo.source
        assert mongo.pid is not None and len(mongo.also) == 1 and alive(mongo.also[0])
        # The cluster's password stays out of the process list.
        password = (infra.root / "data" / "postgres.password").read_text().strip()
        assert len(password) >= 24
        for pid in (mongo.pid, mongo.also[0]):
            assert password not in Path(f"/proc/{pid}/cmdline").read_text()
        # Nobody gets in without it.
        port = next(
            line.split()[-1]
            for line in (infra.root / "logs" / "postgres.log").read_text().splitlines()
            if "listening on IPv4 address" in line
        ).strip('"')
        psql = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-U", "ferretdb", "-w"]
        refused = subprocess.run(
            [*psql, "-p", port, "-c", "select 1", "postgres"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        assert refused.returncode != 0 and "password" in refused.stderr, refused.stderr
        check_round_trip(mongo.url)
    assert not alive(mongo.pid) and not alive(mongo.also[0])


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


def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("mongod") or os.environ.get("DMP_MONGO_URL"):
        pytest.skip("a real MongoDB is in use; FerretDB is not started")
    monkeypatch.setenv("DMP_FERRETDB_BACKEND", "mysql")
    with (
        pytest.raises(InfraError, match="expected 'sqlite' or 'postgresql'"),
        own_infra("dmp-pg-"),
    ):
        pass
