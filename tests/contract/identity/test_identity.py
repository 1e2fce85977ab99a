"""identity's gRPC contract, the service alone (it signs its own tokens; notify is away, so a
correct password ends in UNAVAILABLE: the code cannot be sent)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc import StatusCode as S
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import MongoClient

from dmp.identity.v1 import identity_pb2 as pb
from dmp.identity.v1 import identity_pb2_grpc
from dmp_kit.service_auth import client_assertion, public_pem
from dmp_stack.contract import (
    TESTS,
    Alone,
    Case,
)
from dmp_stack.infra import free_port, spawn
from dmp_stack.stack import stop_pid
from dmp_stack.testing import make_ins, make_rpps, until

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "identity"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["IdentityService"]
STUB = identity_pb2_grpc.IdentityServiceStub
PUBLIC = {
    "Login",
    "VerifyOtp",
    "Refresh",
    "Logout",
    "IssueClientToken",
    "GetJwks",
    "StartActivation",
    "CompleteActivation",
    "OpposeAccount",
    "ListApps",
    "GetApp",
    "CheckAuthorization",
    "AppToken",
    "RevokeAppToken",
}
INS, RPPS = make_ins(), make_rpps()
PASSWORD = "patient password 1"


def patient(**fields: Any) -> pb.RegisterPatientRequest:
    base: dict[str, Any] = {
        "ins": INS,
        "vitale_serial": "12345678",
        "given_name": "Léa",
        "family_name": "Petit",
        "birth_date": "1990-02-03",
        "email": "lea.petit@example.org",
        "password": PASSWORD,
    }
    return pb.RegisterPatientRequest(**{**base, **fields})


def app_fields(**fields: Any) -> pb.AppFields:
    base: dict[str, Any] = {
        "name": "Carnet",
        "publisher": "Éditeur",
        "redirect_uris": [
            "https://app.example.org/cb",
            "http://127.0.0.1/cb",
            "org.example.app:/cb",
        ],
        "scopes": ["measurements.read", "agenda.read"],
    }
    return pb.AppFields(**{**base, **fields})


APP = app_fields()


def listed(answer: Any) -> None:
    assert answer.app.client_id.startswith("app_") and answer.app.listed
    assert list(answer.app.scopes) == ["measurements.read", "agenda.read"]


OAUTH_ERRORS = ("invalid_grant", "invalid_client", "invalid_request", "unsupported_grant_type")


def oauth_error(answer: Any) -> None:
    assert answer.status in (400, 401)
    assert json.loads(answer.body)["error"] in OAUTH_ERRORS


def professional(**fields: Any) -> pb.RegisterProfessionalRequest:
    base: dict[str, Any] = {
        "rpps": RPPS,
        "profession": "10",
        "given_name": "Jeanne",
        "family_name": "Durand",
        "email": "jeanne.durand@example.org",
        "password": "professional pw 1",
    }
    return pb.RegisterProfessionalRequest(**{**base, **fields})


def login(**fields: Any) -> pb.LoginRequest:
    base: dict[str, Any] = {"kind": pb.ACCOUNT_KIND_PATIENT, "login": INS, "password": PASSWORD}
    return pb.LoginRequest(**{**base, **fields})


def registered(answer: Any) -> None:
    assert answer.patient.ins == INS and answer.patient.email == "lea.petit@example.org"


def birth_date_only(answer: Any) -> None:
    """The agenda's service account reads the birth date and the status, nothing else."""
    found = answer.patient
    assert found.ins == INS and found.birth_date and found.status
    assert not (found.given_name or found.family_name or found.email or found.phone)
    assert not (found.vitale_serial or found.legal_representatives)


def keys(answer: Any) -> None:
    assert answer.keys and all(k.kty == "OKP" and k.crv == "Ed25519" and k.kid for k in answer.keys)


# What the other cases read (the patient and the professional they look up, log in as or
# register again), registered once when the service starts (tests/contract/conftest.py):
# every case then passes in any order, and alone.
GIVEN = (
    Case("RegisterPatient", "the patient", patient(), "admin", S.OK, check=registered),
    Case(
        "RegisterProfessional",
        "the professional",
        professional(),
        "admin",
        S.OK,
        check=lambda a: a.professional.rpps == RPPS,
    ),
)
OTHER_INS, OTHER_RPPS = make_ins(), make_rpps()
CASES = [
    Case(
        "RegisterPatient",
        "by an administrator",
        patient(ins=OTHER_INS, email="paul.petit@example.org"),
        "admin",
        S.OK,
        check=lambda a: a.patient.ins == OTHER_INS and a.patient.email == "paul.petit@example.org",
    ),
    Case(
        "RegisterPatient", "the same INS again", patient(), "admin", S.ALREADY_EXISTS, field="ins"
    ),
    Case(
        "RegisterPatient",
        "an INS with a wrong control key",
        patient(ins=INS[:-2] + ("00" if INS[-2:] != "00" else "01")),
        "admin",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case("RegisterPatient", "by a doctor", patient(ins=make_ins()), "doctor", S.PERMISSION_DENIED),
    Case(
        "RegisterProfessional",
        "by an administrator",
        professional(rpps=OTHER_RPPS, email="jean.durand@example.org"),
        "admin",
        S.OK,
        check=lambda a: a.professional.rpps == OTHER_RPPS,
    ),
    Case(
        "RegisterProfessional",
        "an RPPS with a wrong check digit",
        professional(rpps="10000000000"),
        "admin",
        S.INVALID_ARGUMENT,
        field="rpps",
    ),
    Case(
        "RegisterProfessional",
        "by a patient",
        professional(rpps=make_rpps()),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RegisterClient",
        "a key that is not a PEM key",
        pb.RegisterClientRequest(client_id="insurer-x", public_key_pem="nope", roles=["insurer"]),
        "admin",
        S.INVALID_ARGUMENT,
        field="public_key_pem",
    ),
    Case(
        "RegisterClient",
        "a name reserved to the platform's services",
        pb.RegisterClientRequest(client_id="service:dossier", roles=["insurer"]),
        "admin",
        S.INVALID_ARGUMENT,
        field="client_id",
    ),
    Case(
        "RegisterClient",
        "an id that is an RPPS: the system would act as that professional",
        pb.RegisterClientRequest(client_id=RPPS, roles=["facility"]),
        "admin",
        S.INVALID_ARGUMENT,
        field="client_id",
    ),
    Case(
        "RegisterClient",
        "an id that is an INS: the system would act as that patient",
        pb.RegisterClientRequest(client_id=INS, roles=["facility"]),
        "admin",
        S.INVALID_ARGUMENT,
        field="client_id",
    ),
    Case(
        "RegisterClient",
        "by a patient",
        pb.RegisterClientRequest(client_id="c"),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RegisterAgent",
        "a login with spaces",
        pb.RegisterAgentRequest(login="an agent", given_name="A", family_name="B"),
        "admin",
        S.INVALID_ARGUMENT,
        field="login",
    ),
    Case(
        "RegisterAgent",
        "by a doctor",
        pb.RegisterAgentRequest(login="agent1"),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "LookupPatient",
        "by an administrator",
        pb.LookupPatientRequest(ins=INS),
        "admin",
        S.OK,
        check=registered,
    ),
    Case(
        "LookupPatient",
        "by the agenda's service account: the birth date alone",
        pb.LookupPatientRequest(ins=INS),
        "agenda service",
        S.OK,
        check=birth_date_only,
    ),
    Case(
        "LookupPatient",
        "nobody has this INS",
        pb.LookupPatientRequest(ins=make_ins()),
        "admin",
        S.NOT_FOUND,
        field="ins",
    ),
    Case(
        "LookupPatient",
        "by an insurer system, who may not know",
        pb.LookupPatientRequest(ins=INS),
        "insurer",
        S.NOT_FOUND,
        field="ins",
    ),
    Case(
        "LookupPatient",
        "a malformed INS",
        pb.LookupPatientRequest(ins="1"),
        "admin",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "LookupProfessional",
        "by a patient",
        pb.LookupProfessionalRequest(rpps=RPPS),
        "patient",
        S.OK,
        check=lambda a: a.professional.profession == "10",
    ),
    Case(
        "LookupProfessional",
        "nobody has this RPPS",
        pb.LookupProfessionalRequest(rpps=make_rpps()),
        "patient",
        S.NOT_FOUND,
        field="rpps",
    ),
    Case(
        "Login",
        "the right password, with notify away to send the code",
        login(),
        None,
        S.UNAVAILABLE,
    ),
    Case(
        "Login",
        "a wrong password",
        login(password="wrong password"),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-credentials",
    ),
    Case(
        "Login",
        "a login nobody has",
        login(login=make_ins()),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-credentials",
    ),
    Case(
        "Login",
        "no kind",
        login(kind=pb.ACCOUNT_KIND_UNSPECIFIED),
        None,
        S.INVALID_ARGUMENT,
        field="kind",
    ),
    Case("Login", "no password", login(password=""), None, S.INVALID_ARGUMENT, field="password"),
    Case(
        "VerifyOtp",
        "a challenge that does not exist",
        pb.VerifyOtpRequest(challenge_id="nope", code="123456"),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-otp",
    ),
    Case(
        "VerifyOtp",
        "a code that is not 6 digits",
        pb.VerifyOtpRequest(challenge_id="c", code="12"),
        None,
        S.INVALID_ARGUMENT,
        field="code",
    ),
    Case(
        "Refresh",
        "a refresh token it never issued",
        pb.RefreshRequest(refresh_token="not-a-token"),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-token",
    ),
    Case(
        "Refresh",
        "no refresh token",
        pb.RefreshRequest(),
        None,
        S.INVALID_ARGUMENT,
        field="refresh_token",
    ),
    Case(
        "Logout",
        "a token it never issued: nothing to revoke",
        pb.LogoutRequest(refresh_token="not-a-token"),
        None,
        S.OK,
    ),
    Case(
        "IssueClientToken",
        "another grant type",
        pb.IssueClientTokenRequest(grant_type="password"),
        None,
        S.INVALID_ARGUMENT,
        field="grant_type",
        problem="unsupported-grant-type",
    ),
    Case(
        "IssueClientToken",
        "an assertion that is not a JWT",
        pb.IssueClientTokenRequest(
            grant_type="client_credentials",
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion="nope",
        ),
        None,
        S.UNAUTHENTICATED,
    ),
    Case("GetJwks", "anyone", pb.GetJwksRequest(), None, S.OK, check=keys),
    Case(
        "RotateSigningKey",
        "by a patient",
        pb.RotateSigningKeyRequest(),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RevokeSigningKey",
        "a key it never published",
        pb.RevokeSigningKeyRequest(key_id="0000000000000000"),
        "admin",
        S.NOT_FOUND,
        field="key_id",
    ),
    Case(
        "RevokeSigningKey",
        "no key id",
        pb.RevokeSigningKeyRequest(),
        "admin",
        S.INVALID_ARGUMENT,
        field="key_id",
    ),
    Case(
        "RevokeSigningKey",
        "by a patient",
        pb.RevokeSigningKeyRequest(key_id="0000000000000000"),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "GetMe",
        "a system: who it is, from its token",
        pb.GetMeRequest(),
        "insurer",
        S.OK,
        check=lambda a: a.kind == pb.ACCOUNT_KIND_SYSTEM and a.login == "insurer-1",
    ),
    Case(
        "GetMe", "a person whose account does not exist", pb.GetMeRequest(), "patient", S.NOT_FOUND
    ),
    Case(
        "ChangePassword",
        "by a system: it has no password",
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password="la mer est calme"),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ChangePassword",
        "a person whose account does not exist",
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password="la mer est calme"),
        "patient",
        S.NOT_FOUND,
    ),
    Case("ListSessions", "by a system", pb.ListSessionsRequest(), "insurer", S.PERMISSION_DENIED),
    Case(
        "ListSessions",
        "a person whose account does not exist",
        pb.ListSessionsRequest(),
        "patient",
        S.NOT_FOUND,
    ),
    Case(
        "EndSession",
        "a person whose account does not exist",
        pb.EndSessionRequest(session_id="0190f0a0-0000-7000-8000-000000000000"),
        "patient",
        S.NOT_FOUND,
    ),
    Case("EndSession", "by a system", pb.EndSessionRequest(), "insurer", S.PERMISSION_DENIED),
    Case("EndSessions", "by a system", pb.EndSessionsRequest(), "insurer", S.PERMISSION_DENIED),
    Case(
        "StartContactChange",
        "by a system",
        pb.StartContactChangeRequest(channel=pb.OTP_CHANNEL_EMAIL, address="x@example.org"),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "StartContactChange",
        "a person whose account does not exist",
        pb.StartContactChangeRequest(channel=pb.OTP_CHANNEL_EMAIL, address="x@example.org"),
        "patient",
        S.NOT_FOUND,
    ),
    Case(
        "ConfirmContactChange",
        "by a system",
        pb.ConfirmContactChangeRequest(change_id="c", code="123456"),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ConfirmContactChange",
        "a person whose account does not exist",
        pb.ConfirmContactChangeRequest(change_id="c", code="123456"),
        "patient",
        S.NOT_FOUND,
    ),
    Case(
        "StartActivation",
        "an INS with no account: the answer of a wrong code",
        pb.StartActivationRequest(
            ins=make_ins(),
            vitale_serial="12345678",
            provisional_code="ABCD-EFGH-23",
            email="x@example.org",
            phone="+33611223344",
        ),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-credentials",
    ),
    Case(
        "StartActivation",
        "a provisional code of the wrong shape",
        pb.StartActivationRequest(
            ins=INS,
            vitale_serial="12345678",
            provisional_code="123456",
            email="x@example.org",
            phone="+33611223344",
        ),
        None,
        S.INVALID_ARGUMENT,
        field="provisional_code",
    ),
    Case(
        "CompleteActivation",
        "an activation that was never started",
        pb.CompleteActivationRequest(
            activation_id="nope", email_code="123456", sms_code="123456", password="x"
        ),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-otp",
    ),
    Case(
        "OpposeAccount",
        "an INS with no account: the answer of a wrong code",
        pb.OpposeAccountRequest(
            ins=make_ins(), vitale_serial="12345678", provisional_code="ABCDEFGH23"
        ),
        None,
        S.UNAUTHENTICATED,
        problem="invalid-credentials",
    ),
    Case(
        "GetAccountStatus",
        "by a patient",
        pb.GetAccountStatusRequest(ins=INS),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "GetAccountStatus",
        "an INS nobody holds",
        pb.GetAccountStatusRequest(ins=make_ins()),
        "admin",
        S.NOT_FOUND,
        field="ins",
    ),
    Case(
        "WithdrawOpposition",
        "no opposition on record",
        pb.WithdrawOppositionRequest(ins=make_ins()),
        "admin",
        S.NOT_FOUND,
        field="ins",
    ),
    Case(
        "WithdrawOpposition",
        "by a patient",
        pb.WithdrawOppositionRequest(ins=INS),
        "patient",
        S.PERMISSION_DENIED,
    ),
    # Connected apps (the whole flow: tests/e2e/test_connected_apps.py).
    Case(
        "RegisterApp",
        "by an administrator",
        pb.RegisterAppRequest(app=APP),
        "admin",
        S.OK,
        check=listed,
    ),
    Case(
        "RegisterApp",
        "by a patient",
        pb.RegisterAppRequest(app=APP),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RegisterApp",
        "a redirect URI on plain http elsewhere than a loopback address",
        pb.RegisterAppRequest(app=app_fields(redirect_uris=["http://app.example.org/cb"])),
        "admin",
        S.INVALID_ARGUMENT,
        field="redirect_uris",
        problem="invalid-redirect-uri",
    ),
    Case(
        "RegisterApp",
        "a scope that does not exist",
        pb.RegisterAppRequest(app=app_fields(scopes=["everything"])),
        "admin",
        S.INVALID_ARGUMENT,
        field="scopes",
        problem="invalid-scope",
    ),
    Case(
        "RegisterApp",
        "a logo that is not an image",
        pb.RegisterAppRequest(app=app_fields(logo=b"<svg onload=alert(1)>")),
        "admin",
        S.INVALID_ARGUMENT,
        field="logo",
        problem="invalid-logo",
    ),
    Case(
        "UpdateApp",
        "an app not in the catalogue",
        pb.UpdateAppRequest(client_id="app_0000000000000000", app=APP),
        "admin",
        S.NOT_FOUND,
        field="client_id",
    ),
    Case(
        "UpdateApp",
        "by a doctor",
        pb.UpdateAppRequest(client_id="x", app=APP),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "DelistApp",
        "an app not in the catalogue",
        pb.DelistAppRequest(client_id="app_0000000000000000"),
        "admin",
        S.NOT_FOUND,
        field="client_id",
    ),
    Case(
        "DelistApp",
        "by a patient",
        pb.DelistAppRequest(client_id="x"),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case("ListApps", "anyone", pb.ListAppsRequest(), None, S.OK),
    Case(
        "GetApp",
        "an app not in the catalogue",
        pb.GetAppRequest(client_id="app_0000000000000000"),
        None,
        S.NOT_FOUND,
        problem="app-not-found",
    ),
    Case(
        "CheckAuthorization",
        "an unknown app: refused, never redirected",
        pb.CheckAuthorizationRequest(
            query="response_type=code&client_id=app_0000000000000000&redirect_uri=https%3A%2F%2Fx.example%2Fcb"
        ),
        None,
        S.INVALID_ARGUMENT,
        field="client_id",
        problem="invalid-authorization-request",
    ),
    Case(
        "CheckAuthorization",
        "a raw control character: not a query string",
        pb.CheckAuthorizationRequest(query="client_id=\x01"),
        None,
        S.INVALID_ARGUMENT,
        field="query",
        problem="invalid-authorization-request",
    ),
    Case(
        "AppToken",
        "a raw control character: an OAuth error, in the answer",
        pb.AppTokenRequest(form="grant_type=authorization_code&code=\x01"),
        None,
        S.OK,
        check=oauth_error,
    ),
    Case(
        "Authorize",
        "by a doctor",
        pb.AuthorizeRequest(query="client_id=x", allow=True),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "AppToken",
        "a code that was never given: an OAuth error, in the answer",
        pb.AppTokenRequest(
            form="grant_type=authorization_code&code=nope&client_id=app_0000000000000000"
            "&redirect_uri=https%3A%2F%2Fx.example%2Fcb&code_verifier=" + "v" * 43
        ),
        None,
        S.OK,
        check=oauth_error,
    ),
    Case(
        "RevokeAppToken",
        "an unknown client",
        pb.RevokeAppTokenRequest(form="token=nope&client_id=app_0000000000000000"),
        None,
        S.OK,
        check=oauth_error,
    ),
    Case(
        "ListConnections",
        "by a system",
        pb.ListConnectionsRequest(),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case("ListConnections", "a patient with none", pb.ListConnectionsRequest(), "patient", S.OK),
    Case(
        "Disconnect",
        "an app that is not connected",
        pb.DisconnectRequest(client_id="app_0000000000000000"),
        "patient",
        S.NOT_FOUND,
        field="client_id",
        problem="app-not-connected",
    ),
    Case(
        "CheckConnection",
        "a patient's own token is no app's",
        pb.CheckConnectionRequest(),
        "patient",
        S.UNAUTHENTICATED,
        problem="invalid-token",
    ),
]
# Reads the account: tests run in any order, so this one needs nothing registered before.
SLOW = Case(
    "GetMe", "a person whose account does not exist", pb.GetMeRequest(), "patient", S.NOT_FOUND
)


def _client_token(channel: grpc.Channel, key: Ed25519PrivateKey, service: str) -> Any:
    raw = key.private_bytes_raw()
    assertion = client_assertion(raw, service, "https://dmp.localhost/identity")
    return identity_pb2_grpc.IdentityServiceStub(channel).IssueClientToken(
        pb.IssueClientTokenRequest(
            grant_type="client_credentials",
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=assertion,
        ),
        timeout=10,
    )


def test_a_service_account_without_a_configured_key_is_removed_at_start(
    alone_service: Alone, tmp_path: Path
) -> None:
    """Service accounts written at an earlier start, with keys derived from the former shared
    secret: identity started again with per-service keys, one of them not configured, removes
    that account and replaces the others' keys, so the old keys get no token."""
    old = Ed25519PrivateKey.generate()
    old_pem = old.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    clients = MongoClient(alone_service.env["DMP_MONGO_URL"])[alone_service.database]["clients"]
    for name, roles in (("ingest", ["insurer"]), ("notify", ["contact_reader"])):
        clients.replace_one(
            {"_id": f"service:{name}"},
            {"public_key_pem": old_pem.decode(), "roles": roles},
            upsert=True,
        )
    assert _client_token(alone_service.channel, old, "ingest").access_token, "the old key works"

    keys = json.loads(alone_service.env["DMP_SERVICE_PUBLIC_KEYS"])
    del keys["ingest"]
    port = free_port()
    env = {
        **os.environ,
        **alone_service.env,
        "DMP_GRPC_LISTEN": f"127.0.0.1:{port}",
        "DMP_SERVICE_PUBLIC_KEYS": json.dumps(keys),
    }
    proc = spawn([sys.executable, "-m", "dmp_identity"], tmp_path / "identity.log", env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                except grpc.RpcError:
                    return False
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

            assert until(serving, timeout=60), (tmp_path / "identity.log").read_text()
            assert until(lambda: clients.find_one({"_id": "service:ingest"}) is None)
            notify = clients.find_one({"_id": "service:notify"})
            assert notify is not None and notify["public_key_pem"] == public_pem(keys["notify"])
            for service in ("ingest", "notify"):
                with pytest.raises(grpc.RpcError) as refused:
                    _client_token(channel, old, service)
                assert refused.value.code() == S.UNAUTHENTICATED, service
    finally:
        stop_pid(proc.pid)
