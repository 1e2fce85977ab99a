"""Issue 21: Go's own transparency-log code (golang.org/x/mod/sumdb/note and sumdb/tlog, in
tests/tlogcheck) checks the running log through its C2SP face: it accepts the real log, and
rejects a tampered tile, a forked checkpoint and a wrong key. A witness (`dmp audit witness`)
cosigns the log as it grows (c2sp.org/tlog-cosignature) and refuses a split view; it hands its
cosignature to the log, which publishes it with the checkpoint and refuses any it cannot check."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo import MongoClient

from dmp_audit.__main__ import SIGNING_PURPOSE
from dmp_audit.cosign import Cosigner, cosignatures, verify_cosignature, witness_key_of
from dmp_audit.entry import TreeHeadSigner, raw_public_key
from dmp_audit.note import BadNote, Checkpoint, NoteSigner, open_note, public_key_of
from dmp_kit.crypto import derive_key
from dmp_kit.errors import PROBLEM_BASE
from dmp_stack.testing import TEST_WITNESSES, RunningStack, until

TLOGCHECK = Path(__file__).resolve().parents[1] / "tlogcheck"
ENTRIES = 300  # more than a tile's 256: full and partial tiles, at levels 0 and 1


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "the Go toolchain is needed (Go's verifier is the point of this test)"
    binary = tmp_path_factory.mktemp("tlogcheck") / "tlogcheck"
    build = [go, "build", "-buildvcs=false", "-o", str(binary), "."]
    subprocess.run(build, cwd=TLOGCHECK, check=True, timeout=300)
    return binary


class Log:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        patient = stack.create_patient(admin)
        self.ins = patient["ins"]
        self.token = stack.token_for(patient, "patient")
        stack.open_dossier(self.token, patient)
        self.vkey = self.published_key()

    def published_key(self) -> str:
        with self.stack.client() as c:
            (key,) = [k for k in c.get("/v1/audit/keys").json()["keys"] if k["role"] == "log"]
        vkey: str = key["verifier_key"]
        return vkey

    def read(self, times: int) -> None:
        """Each read of the dossier is one entry of its trail."""
        with self.stack.client(self.token) as c:
            for _ in range(times):
                assert c.get(f"/v1/dossiers/{self.ins}").status_code == 200

    def note(self) -> bytes:
        with self.stack.client() as c:
            r = c.get("/v1/audit/log/checkpoint")
        assert r.status_code == 200, r.text
        return r.content

    def signed_size(self) -> int:
        return Checkpoint.from_text(open_note(self.note(), self.vkey)).size

    def grow(self, times: int = 3) -> int:
        """`times` more entries, and the size of a signed checkpoint that covers them."""
        before = self.signed_size()
        self.read(times)
        assert until(lambda: self.signed_size() >= before + times)
        return self.signed_size()


@pytest.fixture(scope="module")
def log(stack: RunningStack) -> Log:
    log = Log(stack)
    log.read(ENTRIES)
    assert until(lambda: log.signed_size() >= ENTRIES), "the reads reached a signed checkpoint"
    return log


def real_signer(stack: RunningStack) -> TreeHeadSigner:
    """The log's own key, from the audit service's credential (what a split view needs)."""
    seed = base64.b64decode(stack.stack.credentials.own_keys["audit"])
    return TreeHeadSigner(derive_key(seed, SIGNING_PURPOSE))


def check(binary: Path, url: str, vkey: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-url", url, "-key", vkey, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Tampering:
    """A proxy in front of the gateway that may rewrite what it answers, byte for byte."""

    def __init__(self, upstream: str, alter: Callable[[str, bytes], bytes]) -> None:
        def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
            got = httpx.get(upstream + handler.path, timeout=30)
            data = alter(handler.path, got.content) if got.status_code == 200 else got.content
            handler.send_response(got.status_code)
            handler.send_header("content-type", got.headers["content-type"])
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        handler = type(
            "Handler",
            (http.server.BaseHTTPRequestHandler,),
            {"do_GET": answer, "log_message": lambda *_: None},
        )
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def proxy(stack: RunningStack) -> Iterator[Callable[[Callable[[str, bytes], bytes]], str]]:
    started: list[Tampering] = []

    def start(alter: Callable[[str, bytes], bytes]) -> str:
        started.append(Tampering(stack.url, alter))
        return started[-1].url

    yield start
    for one in started:
        one.server.shutdown()
        one.server.server_close()


def flip(data: bytes, at: int = 5) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# --- the routes ----------------------------------------------------------------------------


def test_the_checkpoint_and_tiles_are_the_signed_logs(stack: RunningStack, log: Log) -> None:
    signer = real_signer(stack)
    name, public = public_key_of(log.vkey)
    assert raw_public_key(public) == raw_public_key(signer.public_key), "the log's own key"
    with stack.client() as c:
        r = c.get("/v1/audit/log/checkpoint")
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        checkpoint = Checkpoint.from_text(open_note(r.content, log.vkey))
        assert checkpoint.origin == name and checkpoint.size >= ENTRIES
        assert r.content.decode().endswith("\n") and "\n\n\u2014 " + name + " " in r.text

        def same_head() -> bool:
            head = c.get("/v1/audit/checkpoint").json()
            note = Checkpoint.from_text(open_note(log.note(), log.vkey))
            return head["size"] == note.size and bytes.fromhex(head["root_hash"]) == note.root_hash

        assert until(same_head), "the note and the JSON head say the same at the same size"

        r = c.get("/v1/audit/log/tile/0/000")
        assert r.status_code == 200 and len(r.content) == 256 * 32
        assert r.headers["content-type"] == "application/octet-stream"
        assert "immutable" in r.headers["cache-control"]
        proof = c.get("/v1/audit/entries/7/proof").json()
        assert r.content[7 * 32 : 8 * 32].hex() == proof["leaf_hash"]
        level1 = c.get("/v1/audit/log/tile/1/000.p/1")
        assert level1.status_code == 200 and len(level1.content) == 32

        beyond = c.get(f"/v1/audit/log/tile/0/{checkpoint.size // 256 + 1:03d}")
        assert beyond.status_code == 404, beyond.text
        assert beyond.headers["content-type"] == "application/problem+json"
        assert c.get("/v1/audit/log/tile/0/000.p/256").status_code == 422
        bad = c.get("/v1/audit/log/tile/0/x000/001")
        assert bad.status_code == 422 and bad.json()["field"] == "path", bad.text
        bad = c.get("/v1/audit/log/tile/0/1")
        assert bad.status_code == 422 and bad.json()["field"].endswith("index"), bad.text
        assert c.get("/v1/audit/log/tile/64/000").status_code == 422


# --- Go's verifier -------------------------------------------------------------------------


def test_go_accepts_the_log_and_that_it_only_grows(
    tlogcheck: Path, stack: RunningStack, log: Log, tmp_path: Path
) -> None:
    first = tmp_path / "first.checkpoint"
    done = check(tlogcheck, stack.url, log.vkey, "-leaf", "0", "-save", str(first))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK ") and "17 leaves" in done.stdout, done.stdout
    size = Checkpoint.from_text(open_note(first.read_bytes(), log.vkey)).size

    log.read(5)
    assert until(lambda: log.signed_size() > size)
    done = check(tlogcheck, stack.url, log.vkey, "-previous", str(first))
    assert done.returncode == 0, done.stderr
    assert f"consistent with the previous checkpoint ({size})" in done.stdout, done.stdout


@pytest.mark.parametrize("which", ["the first leaves' tile", "the right edge"])
def test_go_rejects_a_tampered_tile(
    tlogcheck: Path, log: Log, proxy: Callable[[Callable[[str, bytes], bytes]], str], which: str
) -> None:
    # The right edge of the checkpoint the verifier is served (the log may grow meanwhile: a
    # checkpoint read beforehand can name another edge than the one it fetches).
    served = [log.signed_size()]
    seen: list[str] = []

    def alter(path: str, data: bytes) -> bytes:
        if path == "/v1/audit/log/checkpoint":
            served.append(int(data.split(b"\n")[1]))  # the note's second line: its size
            return data
        size = served[-1]
        edge = f"/v1/audit/log/tile/0/{size // 256:03d}.p/{size % 256}"
        wanted = "/v1/audit/log/tile/0/000" if which == "the first leaves' tile" else edge
        if path.startswith(wanted):
            seen.append(path)
            return flip(data)
        return data

    url = proxy(alter)
    done = check(tlogcheck, url, log.vkey, "-samples", "0", "-leaf", "3")
    assert seen, "the verifier read the tampered tile"
    assert done.returncode == 1 and "inconsistent tile" in done.stderr, done.stderr
    untouched = check(tlogcheck, proxy(lambda _, data: data), log.vkey, "-samples", "0")
    assert untouched.returncode == 0, untouched.stderr


def test_go_rejects_a_forked_checkpoint(
    tlogcheck: Path,
    stack: RunningStack,
    log: Log,
    proxy: Callable[[Callable[[str, bytes], bytes]], str],
    tmp_path: Path,
) -> None:
    real = Checkpoint.from_text(open_note(log.note(), log.vkey))
    fork = Checkpoint(real.origin, real.size, bytes(31) + b"\x01")

    # Signed by a key the log does not own, under the log's name: no signature vouches for it.
    other = NoteSigner(real.origin, Ed25519PrivateKey.generate())
    url = proxy(lambda path, data: other.sign(fork.text()) if "checkpoint" in path else data)
    done = check(tlogcheck, url, log.vkey)
    assert done.returncode == 1 and "checkpoint signature" in done.stderr, done.stderr

    # Signed by the log's own key (a log showing two views): the tiles do not hash to it…
    own = NoteSigner(real.origin, real_signer(stack).private_key)
    assert own.verifier_key == log.vkey
    url = proxy(lambda path, data: own.sign(fork.text()) if "checkpoint" in path else data)
    done = check(tlogcheck, url, log.vkey)
    assert done.returncode == 1 and "inconsistent tile" in done.stderr, done.stderr

    # …and a party that kept the other view sees the real log does not extend it.
    kept = tmp_path / "fork.checkpoint"
    kept.write_bytes(own.sign(Checkpoint(real.origin, real.size - 3, bytes(32)).text()))
    done = check(tlogcheck, stack.url, log.vkey, "-samples", "1", "-previous", str(kept))
    assert done.returncode == 1 and "the trees differ" in done.stderr, done.stderr


def test_go_rejects_a_wrong_key(tlogcheck: Path, stack: RunningStack, log: Log) -> None:
    name, _ = public_key_of(log.vkey)
    for vkey in (
        NoteSigner(name, Ed25519PrivateKey.generate()).verifier_key,
        NoteSigner("elsewhere.example/log", real_signer(stack).private_key).verifier_key,
    ):
        done = check(tlogcheck, stack.url, vkey)
        assert done.returncode == 1 and "checkpoint signature" in done.stderr, done.stderr
    done = check(tlogcheck, stack.url, "not a key")
    assert done.returncode == 1 and "-key" in done.stderr, done.stderr


# --- a witness -----------------------------------------------------------------------------

WITNESS = "witness.dmp.localhost/w1"
WITNESS_SEED = bytes(range(1, 33))


def witness(
    url: str,
    vkey: str,
    state: Path,
    *extra: str,
    mode: str = "--once",
    name: str = WITNESS,
    seed: bytes = WITNESS_SEED,
) -> subprocess.CompletedProcess[str]:
    """One run of `dmp audit witness`, its key in the environment."""
    argv = [sys.executable, "-m", "dmp_cli", "audit", "witness", "--log", url, "--log-key", vkey]
    env = {**os.environ, "DMP_WITNESS_KEY": base64.b64encode(seed).decode()}
    argv += ["--name", name, "--state", str(state), *mode.split(), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def saved(state: Path) -> Checkpoint:
    return Checkpoint.from_text(json.loads(state.read_text())["checkpoint"].encode())


def test_a_witness_cosigns_the_log_as_it_grows(
    stack: RunningStack, log: Log, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    vkey = Cosigner(WITNESS, Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)).verifier_key
    seen = log.signed_size()
    done = witness(stack.url, log.vkey, state)
    assert done.returncode == 0, done.stderr
    first = saved(state)
    assert first.size >= seen
    assert verify_cosignature(first.text(), done.stdout.strip(), vkey) > 0
    cosigned = json.loads(state.read_text())["cosigned"].encode()
    assert open_note(cosigned, log.vkey) == first.text(), "the log's own signature is kept"

    grown = log.grow()
    done = witness(stack.url, log.vkey, state)
    assert done.returncode == 0, done.stderr
    second = saved(state)
    assert second.size >= grown > first.size, "a larger tree, proved to extend the first"
    assert verify_cosignature(second.text(), done.stdout.strip(), vkey) > 0
    with pytest.raises(BadNote, match="does not verify"):
        verify_cosignature(first.text(), done.stdout.strip(), vkey)

    # the key from a file works the same; from neither, the witness cannot run
    key_file = tmp_path / "witness.key"
    key_file.write_text(base64.b64encode(WITNESS_SEED).decode() + "\n")
    done = witness(stack.url, log.vkey, state, "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    bare = {k: v for k, v in os.environ.items() if k != "DMP_WITNESS_KEY"}
    argv = [sys.executable, "-m", "dmp_cli", "audit", "witness", "--log", stack.url]
    argv += ["--log-key", log.vkey, "--name", WITNESS, "--state", str(state)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=bare)
    assert done.returncode == 2 and "DMP_WITNESS_KEY" in done.stderr, done.stderr


def test_a_witness_refuses_a_split_view(
    stack: RunningStack,
    log: Log,
    proxy: Callable[[Callable[[str, bytes], bytes]], str],
    tmp_path: Path,
) -> None:
    def showing(note: bytes) -> str:
        return proxy(lambda path, data: note if path == "/v1/audit/log/checkpoint" else data)

    state = tmp_path / "state.json"
    origin = public_key_of(log.vkey)[0]
    own = NoteSigner(origin, real_signer(stack).private_key)
    assert witness(stack.url, log.vkey, state).returncode == 0
    a = saved(state)
    kept = state.read_text()

    # Checkpoint B: the same size as A, another root, signed with the log's real key.
    b = Checkpoint(a.origin, a.size, bytes(31) + b"\x01")
    done = witness(showing(own.sign(b.text())), log.vkey, state)
    assert done.returncode == 1, done.stderr
    assert "REFUSED" in done.stderr and "split view" in done.stderr, done.stderr
    assert not done.stdout, "nothing cosigned"
    assert state.read_text() == kept, "the witness keeps what it had cosigned"
    done = witness(showing(own.sign(b.text())), log.vkey, state, mode="--interval 0.2")
    assert done.returncode == 1 and "split view" in done.stderr, "the loop stops at a split view"
    assert state.read_text() == kept

    # A smaller tree, a larger one that does not extend A, a signature by another key.
    smaller = Checkpoint(a.origin, a.size - 1, bytes(32))
    done = witness(showing(own.sign(smaller.text())), log.vkey, state)
    assert done.returncode == 1 and "shrank" in done.stderr, done.stderr
    larger = Checkpoint(a.origin, log.grow(), bytes(32))
    done = witness(showing(own.sign(larger.text())), log.vkey, state)
    assert done.returncode == 1 and "does not extend" in done.stderr, done.stderr
    other = NoteSigner(a.origin, Ed25519PrivateKey.generate())
    done = witness(showing(other.sign(larger.text())), log.vkey, state)
    assert done.returncode == 1 and "not signed by the log's key" in done.stderr, done.stderr
    assert state.read_text() == kept

    # The real log, grown since, still extends A: the witness goes on cosigning it.
    done = witness(stack.url, log.vkey, state)
    assert done.returncode == 0, done.stderr
    assert saved(state).size > a.size


# --- the log's side: cosignatures handed in, checked, published -----------------------------

SECOND = "witness.dmp.localhost/w2"
SECOND_SEED = bytes(range(2, 34))
PROBLEMS = PROBLEM_BASE


def cosigner(name: str = WITNESS, seed: bytes = WITNESS_SEED) -> Cosigner:
    return Cosigner(name, Ed25519PrivateKey.from_private_bytes(seed))


def stored_cosignatures(stack: RunningStack) -> list[dict[str, object]]:
    with MongoClient(stack.infra.mongo.url) as client:
        return list(client["audit"]["cosignatures"].find({}, {"_id": 0, "root": 0}))


def witnessed(stack: RunningStack) -> httpx.Response:
    with stack.client() as c:
        return c.get("/v1/audit/log/checkpoint", params={"witnessed": "true"})


def submit(stack: RunningStack, body: bytes, media: str = "text/plain") -> httpx.Response:
    with stack.client() as c:
        return c.post("/v1/audit/log/cosignatures", content=body, headers={"content-type": media})


def test_the_log_publishes_the_witnesses_keys(stack: RunningStack, log: Log) -> None:
    assert (cosigner().verifier_key, cosigner(SECOND, SECOND_SEED).verifier_key) == TEST_WITNESSES
    with stack.client() as c:
        keys = c.get("/v1/audit/keys").json()["keys"]
    assert keys[0]["role"] == "log" and keys[0]["verifier_key"] == log.vkey
    assert keys[0]["name"] == public_key_of(log.vkey)[0]
    witnesses = [k for k in keys if k["role"] == "witness"]
    assert [(k["name"], k["verifier_key"]) for k in witnesses] == [
        (WITNESS, TEST_WITNESSES[0]),
        (SECOND, TEST_WITNESSES[1]),
    ]
    for k in witnesses:
        _, public = witness_key_of(k["verifier_key"])
        assert base64.b64decode(k["public_key"]) == raw_public_key(public)
        assert k["algorithm"] == "Ed25519" and k["key_id"] == k["verifier_key"].split("+")[1]


def test_witnesses_submit_and_the_log_publishes_their_cosignatures(
    tlogcheck: Path, stack: RunningStack, log: Log, tmp_path: Path
) -> None:
    done = witness(stack.url, log.vkey, tmp_path / "w1.json", "--submit")
    assert done.returncode == 0, done.stderr
    size = saved(tmp_path / "w1.json").size
    first = witnessed(stack)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "text/plain; charset=utf-8"
    checkpoint = Checkpoint.from_text(open_note(first.content, log.vkey))
    assert checkpoint.size == size, "the newest checkpoint a witness cosigned"
    found = cosignatures(first.content, list(TEST_WITNESSES))
    assert list(found) == [TEST_WITNESSES[0]], found
    assert f"\u2014 {WITNESS} " in first.text and first.text.endswith("\n")
    assert done.stdout.strip() in first.text.splitlines(), "the witness's own line, as written"

    # Go's note.Open, given the witness's key only, accepts the note by its cosignature.
    done = check(tlogcheck, stack.url, log.vkey, "-witness", TEST_WITNESSES[0])
    assert done.returncode == 0, done.stderr
    assert f"the checkpoint of {size} cosigned by {WITNESS}" in done.stdout, done.stdout
    done = check(tlogcheck, stack.url, log.vkey, "-witness", TEST_WITNESSES[1])
    assert done.returncode == 1 and "cosignature" in done.stderr, done.stderr

    # The second witness cosigns the same tree: both lines, in the configured order.
    done = witness(
        stack.url, log.vkey, tmp_path / "w2.json", "--submit", name=SECOND, seed=SECOND_SEED
    )
    assert done.returncode == 0, done.stderr
    if saved(tmp_path / "w2.json").size == size:
        both = witnessed(stack).content
        assert list(cosignatures(both, list(TEST_WITNESSES))) == list(TEST_WITNESSES)

    # Submitting again changes nothing but the timestamp: one line per witness and checkpoint.
    assert submit(stack, first.content).status_code == 200
    lines = [d for d in stored_cosignatures(stack) if d["size"] == size]
    assert sorted(str(d["witness"]) for d in lines) == sorted(TEST_WITNESSES[: len(lines)]), lines

    # As the log grows, the newest checkpoint is another tree: the witnessed one stays.
    log.grow()
    newest = log.note()
    assert Checkpoint.from_text(open_note(newest, log.vkey)).size > size
    assert Checkpoint.from_text(open_note(witnessed(stack).content, log.vkey)).size >= size
    done = witness(stack.url, log.vkey, tmp_path / "w1.json", "--submit")
    assert done.returncode == 0, done.stderr
    latest = saved(tmp_path / "w1.json").size
    assert latest > size
    assert TEST_WITNESSES[0] in cosignatures(witnessed(stack).content, [TEST_WITNESSES[0]])
    assert Checkpoint.from_text(open_note(witnessed(stack).content, log.vkey)).size == latest


def test_the_log_refuses_a_cosignature_it_cannot_check(
    stack: RunningStack, log: Log, tmp_path: Path
) -> None:
    note = log.note()
    real = Checkpoint.from_text(open_note(note, log.vkey))
    log_only = note.split(b"\n\n")[0] + b"\n\n" + note.split(b"\n\n")[1].split(b"\n")[0] + b"\n"
    before = stored_cosignatures(stack)

    def refused(body: bytes, problem: str, status: int = 422) -> None:
        r = submit(stack, body)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == PROBLEMS + problem, r.text
        if status == 422:
            assert r.json()["field"] == "note", r.text

    def cosigned(by: Cosigner, signed: bytes, text: bytes) -> bytes:
        return signed + by.cosign(text, 1_700_000_000).line.encode() + b"\n"

    # a key no one configured, under a known witness's name or its own
    stranger = Cosigner(WITNESS, Ed25519PrivateKey.generate())
    refused(cosigned(stranger, log_only, real.text()), "unknown-witness")
    refused(cosigned(cosigner("elsewhere.example/w"), log_only, real.text()), "unknown-witness")
    refused(log_only, "unknown-witness")
    # a forged line: the known witness's name and key id, a signature that does not hold
    good = cosigner().cosign(real.text(), 1_700_000_000).line
    blob = bytearray(base64.b64decode(good.split(" ")[2]))
    blob[-1] ^= 0x01
    forged = f"\u2014 {WITNESS} {base64.b64encode(blob).decode()}\n".encode()
    refused(log_only + forged, "invalid-cosignature")
    # one good line does not carry a forged one: the whole submission is refused
    refused(log_only + good.encode() + b"\n" + forged, "invalid-cosignature")
    # the timestamp is signed too
    stamp = bytearray(base64.b64decode(good.split(" ")[2]))
    stamp[11] ^= 0x01
    moved = f"\u2014 {WITNESS} {base64.b64encode(stamp).decode()}\n".encode()
    refused(log_only + moved, "invalid-cosignature")

    # checkpoints the log never signed: another root at its size, signed with its own key (a
    # split view); a tree it does not hold; a signature by another key; another origin
    own = NoteSigner(real.origin, real_signer(stack).private_key)
    for fake in (
        Checkpoint(real.origin, real.size, bytes(31) + b"\x01"),
        Checkpoint(real.origin, real.size + 10**6, bytes(32)),
    ):
        refused(cosigned(cosigner(), own.sign(fake.text()), fake.text()), "checkpoint-not-signed")
    other = NoteSigner(real.origin, Ed25519PrivateKey.generate())
    refused(cosigned(cosigner(), other.sign(real.text()), real.text()), "checkpoint-not-signed")
    elsewhere = Checkpoint("elsewhere.example/log", real.size, real.root_hash)
    foreign = NoteSigner(elsewhere.origin, real_signer(stack).private_key)
    refused(
        cosigned(cosigner(), foreign.sign(elsewhere.text()), elsewhere.text()),
        "checkpoint-not-signed",
    )

    # not a note at all; not text; too large
    refused(b"hello", "invalid-checkpoint-note")
    refused(real.text() + good.encode() + b"\n", "invalid-checkpoint-note")
    refused(b"\xff\xfe", "validation-error")
    r = submit(stack, cosigned(cosigner(), log_only, real.text()), "application/json")
    assert r.status_code == 415 and r.json()["type"] == PROBLEMS + "unsupported-media-type"
    refused(log_only + (good.encode() + b"\n") * 200, "payload-too-large", 413)

    assert stored_cosignatures(stack) == before, "nothing refused is kept"

    # the witness that is not the log's hears so, and exits 2; what it cosigned, it keeps
    done = witness(stack.url, log.vkey, tmp_path / "w.json", "--submit", seed=bytes(range(3, 35)))
    assert done.returncode == 2 and "refused the cosignature" in done.stderr, done.stderr
    assert "no cosignature by a witness this log knows" in done.stderr, done.stderr
    assert stored_cosignatures(stack) == before
