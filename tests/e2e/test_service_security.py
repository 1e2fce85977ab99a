"""Every service checks its caller itself (zero trust), and patient data never reaches a log."""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dmp.audit.v1 import audit_pb2, audit_pb2_grpc
from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from dmp.notify.v1 import notify_pb2, notify_pb2_grpc
from dmp_stack.testing import RunningStack


def channel(stack: RunningStack, service: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{stack.stack.ports.grpc[service]}")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_services_refuse_calls_without_a_token(stack: RunningStack) -> None:
    async with channel(stack, "dossier") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await dossier_pb2_grpc.DossierServiceStub(ch).GetDossier(
                dossier_pb2.GetDossierRequest(ins="180017512345660"), timeout=5
            )
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with channel(stack, "identity") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await identity_pb2_grpc.IdentityServiceStub(ch).RegisterPatient(
                identity_pb2.RegisterPatientRequest(), timeout=5
            )
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_only_identity_may_ask_notify_to_send_a_code(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    token = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    request = notify_pb2.SendOtpRequest(
        channel=notify_pb2.CHANNEL_EMAIL,
        destination="victim@example.org",
        code="123456",
        challenge_id="forged",
    )
    async with channel(stack, "notify") as ch:
        stub = notify_pb2_grpc.NotifyServiceStub(ch)
        for who in (admin, token["access_token"]):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.SendOtp(request, timeout=5, metadata=bearer(who))
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stack.mailbox.messages_to("victim@example.org") == []


async def test_methods_authenticate_before_they_validate(stack: RunningStack) -> None:
    """Who is calling is settled first: a bad request from nobody is refused as unauthenticated,
    not answered with a validation error that would tell what the method expects."""
    admin = stack.admin_token()
    async with channel(stack, "ingest") as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetBatch(ingest_pb2.GetBatchRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetBatch(ingest_pb2.GetBatchRequest(), timeout=5, metadata=bearer(admin))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_the_transparency_methods_of_audit_are_public(stack: RunningStack) -> None:
    async with channel(stack, "audit") as ch:
        stub = audit_pb2_grpc.AuditServiceStub(ch)
        head = await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5)
        assert head.checkpoint.key_id  # public: hashes and a signature, nothing about anyone
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ListAccessLog(audit_pb2.ListAccessLogRequest(ins="x"), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_no_patient_identifier_email_or_secret_in_any_log(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    with stack.client() as c:
        c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": patient["ins"], "password": "a wrong password"},
        )
    tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    with stack.client(tokens["access_token"]) as c:
        assert c.get("/v1/me").status_code == 200
    code = stack.mailbox.last_code(patient["email"])
    logs = stack.stack.state_dir / "logs"
    text = "\n".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert '"event": "rpc"' in text, "the services do log their calls"
    for secret in (
        patient["ins"],
        patient["email"],
        patient["password"],
        "a wrong password",
        patient["vitale_serial"],
        tokens["access_token"],
        tokens["refresh_token"],
        stack.admin_password,
    ):
        assert secret not in text, f"found in logs: {secret[:6]}…"
    assert f'"{code}"' not in text


async def test_a_patient_may_look_up_only_themselves(stack: RunningStack) -> None:
    admin = stack.admin_token()
    me, other = stack.create_patient(admin), stack.create_patient(admin)
    token = stack.login("patient", me["ins"], me["password"], me["email"])["access_token"]
    async with channel(stack, "identity") as ch:
        stub = identity_pb2_grpc.IdentityServiceStub(ch)
        found = await stub.LookupPatient(
            identity_pb2.LookupPatientRequest(ins=me["ins"]), timeout=5, metadata=bearer(token)
        )
        assert found.patient.ins == me["ins"]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.LookupPatient(
                identity_pb2.LookupPatientRequest(ins=other["ins"]),
                timeout=5,
                metadata=bearer(token),
            )
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
        by_admin = await stub.LookupPatient(
            identity_pb2.LookupPatientRequest(ins=other["ins"]), timeout=5, metadata=bearer(admin)
        )
        assert by_admin.patient.family_name == "Martin"


def test_nobody_registers_a_client_in_the_name_of_a_service(stack: RunningStack) -> None:
    """Service accounts (`service:<name>`, keys derived from the master key) are identity's to
    provision; an administrator cannot plant a key under one of their names."""
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with stack.client(stack.admin_token()) as c:
        r = c.post(
            "/v1/admin/clients",
            json={"client_id": "service:notify", "public_key_pem": pem, "roles": ["insurer"]},
        )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "client_id"
