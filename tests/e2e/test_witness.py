"""Issue 21: a witness (`dmp audit witness`) cosigns the running log's checkpoint as it grows
(c2sp.org/tlog-cosignature), and refuses what a log showing two views would show it."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dmp_audit.__main__ import SIGNING_PURPOSE
from dmp_audit.cosign import Cosigner, verify_cosignature
from dmp_audit.entry import TreeHeadSigner
from dmp_audit.note import Checkpoint, NoteSigner, open_note
from dmp_kit.crypto import derive_key
from dmp_stack.testing import RunningStack, until

NAME = "witness.dmp.localhost/w1"
SEED = bytes(range(1, 33))


class Log:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        patient = stack.create_patient(admin)
        self.ins = patient["ins"]
        self.token = stack.token_for(patient, "patient")
        stack.open_dossier(self.token, patient)
        with stack.client() as c:
            (key,) = c.get("/v1/audit/keys").json()["keys"]
        self.vkey: str = key["verifier_key"]

    def grow(self, times: int = 3) -> int:
        """Read the dossier (one entry each) and wait for a signed checkpoint that covers it."""
        before = self.checkpoint().size
        with self.stack.client(self.token) as c:
            for _ in range(times):
                assert c.get(f"/v1/dossiers/{self.ins}").status_code == 200
        assert until(lambda: self.checkpoint().size >= before + times)
        return self.checkpoint().size

    def note(self) -> bytes:
        with self.stack.client() as c:
            r = c.get("/v1/audit/log/checkpoint")
        assert r.status_code == 200, r.text
        return r.content

    def checkpoint(self) -> Checkpoint:
        return Checkpoint.from_text(open_note(self.note(), self.vkey))

    def own_signer(self) -> NoteSigner:
        """The log's real key, from the audit service's credential: what a split view needs."""
        seed = base64.b64decode(self.stack.stack.credentials.own_keys["audit"])
        key = TreeHeadSigner(derive_key(seed, SIGNING_PURPOSE)).private_key
        signer = NoteSigner(self.checkpoint().origin, key)
        assert signer.verifier_key == self.vkey
        return signer


@pytest.fixture(scope="module")
def log(stack: RunningStack) -> Log:
    log = Log(stack)
    log.grow()
    return log


class Showing:
    """A proxy in front of the gateway that shows the witness a checkpoint of its choice."""

    def __init__(self, upstream: str, note: bytes) -> None:
        def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
            if handler.path == "/v1/audit/log/checkpoint":
                status, data = 200, note
            else:
                got = httpx.get(upstream + handler.path, timeout=30)
                status, data = got.status_code, got.content
            handler.send_response(status)
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
def show(stack: RunningStack) -> Iterator[object]:
    started: list[Showing] = []

    def start(note: bytes) -> str:
        started.append(Showing(stack.url, note))
        return started[-1].url

    yield start
    for one in started:
        one.server.shutdown()
        one.server.server_close()


def witness(url: str, vkey: str, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "dmp_cli", "audit", "witness", "--log", url, "--log-key", vkey]
    env = {**os.environ, "DMP_WITNESS_KEY": base64.b64encode(SEED).decode()}
    argv += ["--name", NAME, "--state", str(state), "--once", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def saved(state: Path) -> Checkpoint:
    return Checkpoint.from_text(json.loads(state.read_text())["checkpoint"].encode())


def test_the_witness_cosigns_the_log_as_it_grows(
    stack: RunningStack, log: Log, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    vkey = Cosigner(NAME, Ed25519PrivateKey.from_private_bytes(SEED)).verifier_key
    seen = log.checkpoint()
    done = witness(stack.url, log.vkey, state)
    assert done.returncode == 0, done.stderr
    first = saved(state)
    assert first.size >= seen.size and first.origin == seen.origin
    assert verify_cosignature(first.text(), done.stdout.strip(), vkey) > 0
    cosigned = json.loads(state.read_text())["cosigned"].encode()
    assert open_note(cosigned, log.vkey) == first.text(), "the log's own signature is kept"

    grown = log.grow()
    done = witness(stack.url, log.vkey, state)
    assert done.returncode == 0, done.stderr
    second = saved(state)
    assert second.size >= grown > first.size, "a larger tree, proved to extend the first"
    assert verify_cosignature(second.text(), done.stdout.strip(), vkey) > 0
    with pytest.raises(Exception, match="does not verify"):
        verify_cosignature(first.text(), done.stdout.strip(), vkey)

    # the key from a file works the same; from neither, the witness cannot run
    key_file = tmp_path / "witness.key"
    key_file.write_text(base64.b64encode(SEED).decode() + "\n")
    done = witness(stack.url, log.vkey, state, "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    bare = {k: v for k, v in os.environ.items() if k != "DMP_WITNESS_KEY"}
    argv = [sys.executable, "-m", "dmp_cli", "audit", "witness", "--log", stack.url]
    argv += ["--log-key", log.vkey, "--name", NAME, "--state", str(state)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=bare)
    assert done.returncode == 2 and "DMP_WITNESS_KEY" in done.stderr, done.stderr


def test_the_witness_refuses_a_split_view(
    stack: RunningStack, log: Log, show: object, tmp_path: Path
) -> None:
    assert callable(show)
    state = tmp_path / "state.json"
    own = log.own_signer()
    assert witness(stack.url, log.vkey, state).returncode == 0
    a = saved(state)
    kept = state.read_text()

    # Checkpoint B: the same size as A, another root, signed with the log's real key.
    b = Checkpoint(a.origin, a.size, bytes(31) + b"\x01")
    done = witness(show(own.sign(b.text())), log.vkey, state)
    assert done.returncode == 1, done.stderr
    assert "REFUSED" in done.stderr and "split view" in done.stderr, done.stderr
    assert not done.stdout, "nothing cosigned"
    assert state.read_text() == kept, "the witness keeps what it had cosigned"

    # A smaller tree, a larger one that does not extend A, a signature by another key.
    smaller = Checkpoint(a.origin, a.size - 1, bytes(32))
    done = witness(show(own.sign(smaller.text())), log.vkey, state)
    assert done.returncode == 1 and "shrank" in done.stderr, done.stderr
    larger = Checkpoint(a.origin, log.grow(), bytes(32))
    done = witness(show(own.sign(larger.text())), log.vkey, state)
    assert done.returncode == 1 and "does not extend" in done.stderr, done.stderr
    other = NoteSigner(a.origin, Ed25519PrivateKey.generate())
    done = witness(show(other.sign(log.checkpoint().text())), log.vkey, state)
    assert done.returncode == 1 and "not signed by the log's key" in done.stderr, done.stderr
    assert state.read_text() == kept

    # The real log, grown since, still extends A: the witness goes on cosigning it.
    done = witness(stack.url, log.vkey, state)
    assert done.returncode == 0, done.stderr
    assert saved(state).size > a.size
