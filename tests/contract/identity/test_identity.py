"""identity's gRPC contract, the service alone (it signs its own tokens; notify is away, so a
correct password ends in UNAVAILABLE: the code cannot be sent)."""

from __future__ import annotations

from typing import Any

from grpc import StatusCode as S

from dmp.identity.v1 import identity_pb2 as pb
from dmp.identity.v1 import identity_pb2_grpc
from dmp_stack.contract import (
    TESTS,
    Case,
)
from dmp_stack.testing import make_ins, make_rpps

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "identity"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["IdentityService"]
STUB = identity_pb2_grpc.IdentityServiceStub
PUBLIC = {"Login", "VerifyOtp", "Refresh", "Logout", "IssueClientToken", "GetJwks"}
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


def keys(answer: Any) -> None:
    assert answer.keys and all(k.kty == "OKP" and k.crv == "Ed25519" and k.kid for k in answer.keys)


CASES = [
    Case("RegisterPatient", "by an administrator", patient(), "admin", S.OK, check=registered),
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
        professional(),
        "admin",
        S.OK,
        check=lambda a: a.professional.rpps == RPPS,
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
]
# Reads the account: tests run in any order, so this one needs nothing registered before.
SLOW = Case(
    "GetMe", "a person whose account does not exist", pb.GetMeRequest(), "patient", S.NOT_FOUND
)
