"""FerretDB on a PostgreSQL cluster of its own (DMP_FERRETDB_BACKEND=postgresql, used by the
long runs): it starts, keeps what is written with the features the code relies on, refuses a
duplicate on a unique index, and `own_infra` stops both servers."""

from __future__ import annotations

import os
import shutil

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
