"""The person's own account: password, sessions, contacts; and activation of the accounts the
insurer's directory creates."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from dmp.identity.v1 import identity_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.routes.admin import PatientIn
from dmp_gateway.security import Caller
from dmp_gateway.throttle import account_throttled, auth_throttled, client_address
from dmp_kit.auth import Principal
from dmp_kit.errors import InvalidArgument

router = APIRouter(tags=["account"])
# A password checked here is checked as a login's: the same per-address limit.
throttled = APIRouter(tags=["account"], dependencies=[Depends(auth_throttled)])

# What a call about one's own account meets: a caller who is not a person, an account gone.
MINE: dict[int, tuple[str, ...]] = {403: ("forbidden",), 404: ("not-found",)}
PASSWORD_REFUSALS = ("weak-password", "trivial-password", "common-password", "personal-password")


class PasswordChangeIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(
        min_length=1,
        max_length=256,
        description="12 to 256 characters; not a common or breached password, not a "
        "repetition or a sequence, not built from the person's names, numbers or addresses",
    )


class PasswordChanged(BaseModel):
    sessions_ended: int = Field(description="the person's other sessions, ended")


class Session(BaseModel):
    id: str
    created_at: str
    last_used_at: str = Field(description="the session's last login or refresh")
    expires_at: str
    user_agent: str | None = None
    current: bool = Field(description="the session of the token that asks")


class Sessions(BaseModel):
    items: list[Session]


class SessionsEnded(BaseModel):
    ended: int


def _login_key(who: Principal) -> str:
    """The per-account limit's key, shared with the login of the same account."""
    return f"login:{who.kind}:{(who.ins or who.rpps or who.subject).casefold()}"


@throttled.post(
    "/v1/me/password",
    response_model=PasswordChanged,
    summary="Change one's password (the current one is needed); ends one's other sessions",
    responses=problems.responses(
        423,
        types={
            403: ("forbidden",),
            404: ("not-found",),
            422: ("validation-error", "wrong-password", *PASSWORD_REFUSALS),
        },
    ),
)
async def change_password(body: PasswordChangeIn, request: Request, who: Caller) -> PasswordChanged:
    await account_throttled(request, _login_key(who))
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.ChangePassword,
        pb.ChangePasswordRequest(
            current_password=body.current_password,
            new_password=body.new_password,
            client_ip=client_address(request),
        ),
        token=who.token,
    )
    return PasswordChanged(sessions_ended=resp.sessions_ended)


@router.get(
    "/v1/me/sessions",
    response_model=Sessions,
    response_model_exclude_none=True,
    summary="One's sessions (one per login, alive while its refresh token is)",
    responses=problems.responses(types=MINE),
)
async def list_sessions(request: Request, who: Caller) -> Sessions:
    ds = downstream(request)
    resp = await ds.call(ds.identity.ListSessions, pb.ListSessionsRequest(), token=who.token)
    return Sessions(
        items=[
            Session(
                id=s.id,
                created_at=iso(s.created_at),
                last_used_at=iso(s.last_used_at),
                expires_at=iso(s.expires_at),
                user_agent=s.user_agent or None,
                current=s.current,
            )
            for s in resp.sessions
        ]
    )


@router.delete(
    "/v1/me/sessions/{session_id}",
    status_code=204,
    summary="End one of one's sessions (its refresh token stops working; an access token "
    "already issued lives until it expires)",
    responses=problems.responses(types=MINE),
)
async def end_session(
    request: Request,
    who: Caller,
    session_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> None:
    ds = downstream(request)
    await ds.call(
        ds.identity.EndSession, pb.EndSessionRequest(session_id=session_id), token=who.token
    )


@router.delete(
    "/v1/me/sessions",
    response_model=SessionsEnded,
    summary="End all of one's sessions, or all but the current one",
    responses=problems.responses(types=MINE),
)
async def end_sessions(
    request: Request,
    who: Caller,
    keep_current: Annotated[
        bool, Query(description="true: every session but the one of this token")
    ] = False,
) -> SessionsEnded:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.EndSessions, pb.EndSessionsRequest(keep_current=keep_current), token=who.token
    )
    return SessionsEnded(ended=resp.ended)


class ContactChangeIn(BaseModel):
    email: str | None = Field(default=None, max_length=254, description="a new e-mail address")
    phone: str | None = Field(default=None, max_length=32, description="a new phone number")


class ContactChangeStarted(BaseModel):
    change_id: str
    channel: Literal["email", "sms"] = Field(description="where the code was sent")
    expires_at: str


class ContactChangeConfirmIn(BaseModel):
    code: str = Field(pattern=r"^[0-9]{6}$")


class Contacts(BaseModel):
    email: str | None = None
    phone: str | None = None


@router.post(
    "/v1/me/contact-changes",
    status_code=202,
    response_model=ContactChangeStarted,
    summary="Replace one's e-mail address or phone number: a code is sent to the new one",
    responses=problems.responses(types=MINE),
)
async def start_contact_change(
    body: ContactChangeIn, request: Request, who: Caller
) -> ContactChangeStarted:
    if (body.email is None) == (body.phone is None):
        raise InvalidArgument("give either email or phone", field="email")
    await account_throttled(request, f"contact:{who.subject}")
    channel: Literal["email", "sms"] = "email" if body.email is not None else "sms"
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.StartContactChange,
        pb.StartContactChangeRequest(
            channel=pb.OTP_CHANNEL_EMAIL if channel == "email" else pb.OTP_CHANNEL_SMS,
            address=body.email if body.email is not None else body.phone or "",
        ),
        token=who.token,
    )
    return ContactChangeStarted(
        change_id=resp.change_id, channel=channel, expires_at=iso(resp.expires_at)
    )


@router.post(
    "/v1/me/contact-changes/{change_id}/confirm",
    response_model=Contacts,
    response_model_exclude_none=True,
    summary="Confirm a new address with the code it received; the old address is told",
    responses=problems.responses(
        423,
        types={**MINE, 422: ("validation-error", "invalid-otp", "otp-expired")},
    ),
)
async def confirm_contact_change(
    body: ContactChangeConfirmIn,
    request: Request,
    who: Caller,
    change_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Contacts:
    await account_throttled(request, f"challenge:{change_id}")
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.ConfirmContactChange,
        pb.ConfirmContactChangeRequest(change_id=change_id, code=body.code),
        token=who.token,
    )
    return Contacts(email=resp.email or None, phone=resp.phone or None)


# ------------------------------------------- accounts the insurer's directory creates


class ProvisionalPatientIn(PatientIn):
    password: None = Field(default=None, description="none: the person chooses theirs")


class AccountStatus(BaseModel):
    ins: str
    status: Literal["to_activate", "active", "opposed"]
    activation_due_at: str | None = Field(
        default=None, description="to_activate: when it becomes active by itself"
    )


class ActivationStartIn(BaseModel):
    ins: str = Field(max_length=32)
    vitale_serial: str = Field(max_length=32, description="the serial number of the Vitale card")
    provisional_code: str = Field(max_length=32, description="the code the person received")
    email: str = Field(max_length=254, description="verified with a code sent to it")
    phone: str = Field(max_length=32, description="verified with a code sent to it by SMS")


class ActivationStarted(BaseModel):
    activation_id: str
    expires_at: str


class ActivationCompleteIn(BaseModel):
    email_code: str = Field(pattern=r"^[0-9]{6}$")
    sms_code: str = Field(pattern=r"^[0-9]{6}$")
    password: str = Field(
        min_length=1, max_length=256, description="as for a password change (new_password)"
    )


class OppositionIn(BaseModel):
    ins: str = Field(max_length=32)
    vitale_serial: str = Field(max_length=32)
    provisional_code: str = Field(max_length=32)


class Outcome(BaseModel):
    status: Literal["active", "opposed"]


DIRECTORY: dict[int, tuple[str, ...]] = {403: ("forbidden",)}
WRONG_PROOF: dict[int, tuple[str, ...]] = {401: ("invalid-credentials",)}


def _status(ins: str, resp: pb.GetAccountStatusResponse | pb.Patient) -> AccountStatus:
    return AccountStatus(
        ins=ins,
        status=resp.status,  # type: ignore[arg-type]
        activation_due_at=iso(resp.activation_due_at)
        if resp.HasField("activation_due_at")
        else None,
    )


@router.post(
    "/v1/accounts",
    status_code=201,
    response_model=AccountStatus,
    response_model_exclude_none=True,
    summary="The insurer's directory creates a patient's account, to be activated or opposed "
    "by its person: a provisional code goes to the e-mail address, or else by SMS",
    responses=problems.responses(
        types={**DIRECTORY, 404: ("not-found",), 409: ("already-exists", "account-opposed")}
    ),
)
async def create_provisional(
    body: ProvisionalPatientIn, request: Request, who: Caller
) -> AccountStatus:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.RegisterPatient,
        pb.RegisterPatientRequest(**body.model_dump(exclude_none=True), provisional=True),
        token=who.token,
    )
    return _status(resp.patient.ins, resp.patient)


@router.get(
    "/v1/accounts/{ins}",
    response_model=AccountStatus,
    response_model_exclude_none=True,
    summary="Where a patient's account stands: to activate, active, or opposed",
    responses=problems.responses(types={**DIRECTORY, 404: ("not-found",)}),
)
async def account_status(
    request: Request, who: Caller, ins: Annotated[str, Path(max_length=32)]
) -> AccountStatus:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.GetAccountStatus, pb.GetAccountStatusRequest(ins=ins), token=who.token
    )
    return _status(ins, resp)


@router.delete(
    "/v1/accounts/{ins}/opposition",
    status_code=204,
    summary="The person withdraws their opposition (through the insurer): an account may be "
    "opened for them again",
    responses=problems.responses(types={**DIRECTORY, 404: ("not-found",)}),
)
async def withdraw_opposition(
    request: Request, who: Caller, ins: Annotated[str, Path(max_length=32)]
) -> None:
    ds = downstream(request)
    await ds.call(
        ds.identity.WithdrawOpposition, pb.WithdrawOppositionRequest(ins=ins), token=who.token
    )


@throttled.post(
    "/v1/accounts/activation",
    status_code=202,
    response_model=ActivationStarted,
    summary="Activation, first step: INS, Vitale card serial and provisional code; a code goes "
    "to the e-mail address and another to the phone",
    responses=problems.responses(423, types=WRONG_PROOF),
)
async def start_activation(body: ActivationStartIn, request: Request) -> ActivationStarted:
    await account_throttled(request, f"login:patient:{body.ins.strip().casefold()}")
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.StartActivation,
        pb.StartActivationRequest(
            ins=body.ins,
            vitale_serial=body.vitale_serial,
            provisional_code=body.provisional_code,
            email=body.email,
            phone=body.phone,
            client_ip=client_address(request),
        ),
    )
    return ActivationStarted(activation_id=resp.activation_id, expires_at=iso(resp.expires_at))


@throttled.post(
    "/v1/accounts/activation/{activation_id}",
    response_model=Outcome,
    summary="Activation, second step: both codes and the password the person chooses",
    responses=problems.responses(423, types={401: ("invalid-otp", "otp-expired")}),
)
async def complete_activation(
    body: ActivationCompleteIn,
    request: Request,
    activation_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Outcome:
    await account_throttled(request, f"challenge:{activation_id}")
    ds = downstream(request)
    await ds.call(
        ds.identity.CompleteActivation,
        pb.CompleteActivationRequest(
            activation_id=activation_id,
            email_code=body.email_code,
            sms_code=body.sms_code,
            password=body.password,
        ),
    )
    return Outcome(status="active")


@throttled.post(
    "/v1/accounts/opposition",
    response_model=Outcome,
    summary="The person opposes the creation of their account: it is deleted, and none can be "
    "opened for them until they withdraw their opposition",
    responses=problems.responses(423, types={**WRONG_PROOF, 409: ("opposition-too-late",)}),
)
async def oppose(body: OppositionIn, request: Request) -> Outcome:
    await account_throttled(request, f"login:patient:{body.ins.strip().casefold()}")
    ds = downstream(request)
    await ds.call(
        ds.identity.OpposeAccount,
        pb.OpposeAccountRequest(
            ins=body.ins,
            vitale_serial=body.vitale_serial,
            provisional_code=body.provisional_code,
            client_ip=client_address(request),
        ),
    )
    return Outcome(status="opposed")
