"""Trace and audit: a dossier's access log; the log's signed tree heads and Merkle proofs.

The checkpoint, proofs and keys are public, as a transparency log's are: they carry hashes
only, and whoever holds an entry must be able to check it is in the signed log. Under
`/v1/audit/log/` the same log speaks the C2SP formats that tiled-log tools read (the
checkpoint note and the hash tiles, docs/audit.md); entry bundles are not served: entries are
for the readers rule 10 names.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field

from dmp.audit.v1 import audit_pb2 as pb
from dmp.dossier.v1 import dossier_pb2
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller
from dmp_kit.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType

router = APIRouter(tags=["audit"])

Size = Annotated[int, Query(ge=1, le=2**62)]


class Actor(BaseModel):
    kind: str
    id: str
    name: str
    profession: str


class AccessLogEntry(BaseModel):
    seq: int = Field(description="the entry's index in the audit log (leaf index, from 0)")
    at: str | None = None
    actor: Actor | None = None
    on_behalf_of: str | None = Field(
        None,
        description="the patient's INS, when the actor (`actor.id`) is another person acting "
        "for them: a trusted person or a legal representative",
    )
    action: str | None = Field(
        None, description="create, read, update, delete, execute, search or login"
    )
    document_id: str | None = None
    mode: str | None = Field(None, description="normal, break_glass or regulator")
    outcome: str | None = Field(None, description="success, failure or denied")
    reason: str | None = None
    query: str | None = None
    entry: str | None = Field(
        None, description="the entry's canonical bytes (UTF-8), as the log hashed them"
    )
    leaf_hash: str = Field(description="SHA-256(0x00 ‖ entry), hex")
    withheld: bool = Field(
        False,
        description="the entry names a document the caller may not read (one hidden from the "
        "patient until its announcement): only its `seq` and `leaf_hash` are given, for its "
        "inclusion proof and the dossier's hash chain; every other field is left out",
    )


class AccessLog(BaseModel):
    entries: list[AccessLogEntry]
    next: str | None = Field(None, description="cursor of the next (older) page")


class Checkpoint(BaseModel):
    size: int
    root_hash: str
    signature: str = Field(description="base64 Ed25519 signature (docs/audit.md)")
    key_id: str
    timestamp: str


class InclusionProof(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    proof: list[str]


class ConsistencyProof(BaseModel):
    proof: list[str]


class PublicKey(BaseModel):
    key_id: str
    algorithm: str
    public_key: str = Field(description="base64 of the raw 32-byte key")
    verifier_key: str = Field(
        description="the same key as a signed-note verifier key (c2sp.org/signed-note), "
        "`<origin>+<hex key id>+<base64(0x01 ‖ key)>`: what checks `/v1/audit/log/checkpoint`"
    )
    not_before: str | None = Field(
        None,
        description="from when the key signs heads, written as heads' timestamps are; absent: "
        "since the log began. A head verifies under the key only if its timestamp is within "
        "[not_before, not_after]",
    )
    not_after: str | None = Field(
        None, description="until when the key signed heads; absent: the current key"
    )
    role: Literal["log", "witness"] = Field(
        "log",
        description="`log`: signs the tree heads and checkpoints; `witness`: an independent "
        "party that cosigns checkpoints it checked (c2sp.org/tlog-cosignature), its verifier "
        "key `<name>+<hex key id>+<base64(0x04 ‖ key)>`",
    )
    name: str = Field("", description="the key's name in signature lines")


class PublicKeys(BaseModel):
    keys: list[PublicKey] = Field(
        description="the current key first, then the retired ones, most recently retired first"
    )


@router.get(
    "/v1/dossiers/{ins}/access-log",
    response_model=AccessLog,
    response_model_exclude_none=True,
    summary="Who did what on the dossier, newest first (rule 10)",
    responses=problems.responses(403, 404),
)
async def access_log(
    ins: str,
    request: Request,
    who: Caller,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AccessLog:
    ds = downstream(request)
    resp = await ds.call(
        ds.audit.ListAccessLog,
        pb.ListAccessLogRequest(ins=ins, cursor=cursor or "", page_size=page_size),
        token=who.token,
    )
    named = sorted({e.document_id for e in resp.entries if e.document_id})
    readable: set[str] = set()
    if named:
        # Nothing names a document to who may not read it: the dossier says which they may.
        answer = await ds.call(
            ds.dossier.ReadableDocuments,
            dossier_pb2.ReadableDocumentsRequest(ins=ins, document_ids=named),
            token=who.token,
        )
        readable = set(answer.document_ids)
    return AccessLog(
        entries=[
            _entry(e, ins) if not e.document_id or e.document_id in readable else _withheld(e)
            for e in resp.entries
        ],
        next=resp.next or None,
    )


def _withheld(e: pb.AccessLogEntry) -> AccessLogEntry:
    return AccessLogEntry(seq=e.seq, leaf_hash=e.leaf_hash, withheld=True)


def _entry(e: pb.AccessLogEntry, ins: str) -> AccessLogEntry:
    acting_for = e.actor.kind == "patient" and e.actor.id not in ("", ins)
    return AccessLogEntry(
        on_behalf_of=ins if acting_for else None,
        seq=e.seq,
        at=iso(e.at),
        actor=Actor(
            kind=e.actor.kind, id=e.actor.id, name=e.actor.name, profession=e.actor.profession
        ),
        action=e.action,
        document_id=e.document_id or None,
        mode=e.mode,
        outcome=e.outcome,
        reason=e.reason or None,
        query=e.query or None,
        entry=e.entry,
        leaf_hash=e.leaf_hash,
    )


@router.get("/v1/audit/checkpoint", response_model=Checkpoint, summary="The newest signed head")
async def checkpoint(request: Request) -> Checkpoint:
    ds = downstream(request)
    resp = await ds.call(ds.audit.GetCheckpoint, pb.GetCheckpointRequest())
    head = resp.checkpoint
    return Checkpoint(
        size=head.size,
        root_hash=head.root_hash,
        signature=head.signature,
        key_id=head.key_id,
        # exactly as signed: six fractional digits and Z (docs/audit.md)
        timestamp=_as_signed(head.timestamp),
    )


def _as_signed(moment: Timestamp) -> str:
    """A time exactly as heads sign it: six fractional digits and Z (docs/audit.md)."""
    return moment.ToDatetime().isoformat(timespec="microseconds") + "Z"


@router.get(
    "/v1/audit/entries/{seq}/proof",
    response_model=InclusionProof,
    summary="RFC 9162 inclusion proof of one entry (default: in the newest signed head)",
    responses=problems.responses(404),
)
async def inclusion_proof(
    request: Request,
    seq: Annotated[int, Path(ge=0, le=2**62)],
    tree_size: Size | None = None,
) -> InclusionProof:
    ds = downstream(request)
    resp = await ds.call(
        ds.audit.GetInclusionProof,
        pb.GetInclusionProofRequest(seq=seq, tree_size=tree_size or 0),
    )
    return InclusionProof(
        leaf_index=resp.leaf_index,
        tree_size=resp.tree_size,
        leaf_hash=resp.leaf_hash,
        proof=list(resp.proof),
    )


@router.get(
    "/v1/audit/consistency",
    response_model=ConsistencyProof,
    summary="RFC 9162 consistency proof between two tree sizes",
)
async def consistency_proof(
    request: Request,
    from_size: Annotated[int, Query(alias="from", ge=1, le=2**62)],
    to_size: Annotated[int, Query(alias="to", ge=1, le=2**62)],
) -> ConsistencyProof:
    ds = downstream(request)
    resp = await ds.call(
        ds.audit.GetConsistencyProof,
        pb.GetConsistencyProofRequest(from_size=from_size, to_size=to_size),
    )
    return ConsistencyProof(proof=list(resp.proof))


@router.get(
    "/v1/audit/keys",
    response_model=PublicKeys,
    response_model_exclude_none=True,
    summary="Keys that sign tree heads (with their validity periods), and the witnesses' keys "
    "that cosign checkpoints",
)
async def public_keys(request: Request) -> PublicKeys:
    ds = downstream(request)
    resp = await ds.call(ds.audit.ListPublicKeys, pb.ListPublicKeysRequest())
    return PublicKeys(
        keys=[
            PublicKey(
                key_id=k.key_id,
                algorithm=k.algorithm,
                public_key=k.public_key,
                verifier_key=k.verifier_key,
                not_before=_as_signed(k.not_before) if k.HasField("not_before") else None,
                not_after=_as_signed(k.not_after) if k.HasField("not_after") else None,
                role="witness" if k.role == "witness" else "log",
                name=k.name,
            )
            for k in resp.keys
        ]
    )


# --- the C2SP face: c2sp.org/tlog-checkpoint and c2sp.org/tlog-tiles -------------------------

# A tile's bytes at a path never change (a partial tile's path says its width): cache forever.
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
TileIndex = Annotated[
    str,
    Path(
        max_length=40,
        pattern=r"^(x[0-9]{3}/)*[0-9]{3}(\.p/[1-9][0-9]{0,2})?$",
        description="the tile's index in groups of three digits, all but the last prefixed "
        "with `x` (1234 → `x001/234`), then `.p/<width>` for a partial tile",
    ),
]


@router.get(
    "/v1/audit/log/checkpoint",
    response_class=PlainTextResponse,
    summary="The newest signed head as a C2SP checkpoint (signed note), with the witnesses' "
    "cosignatures it has received",
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problems.responses(404),
    },
)
async def checkpoint_note(
    request: Request,
    witnessed: Annotated[
        bool,
        Query(
            description="the newest checkpoint at least one witness of `/v1/audit/keys` "
            "cosigned, instead of the newest (404 while none has)"
        ),
    ] = False,
) -> PlainTextResponse:
    ds = downstream(request)
    resp = await ds.call(ds.audit.GetCheckpoint, pb.GetCheckpointRequest(witnessed=witnessed))
    return PlainTextResponse(resp.note)


MAX_COSIGNED_NOTE = 16 * 1024


class CosignatureKept(BaseModel):
    size: int = Field(description="the cosigned checkpoint's tree size")
    witnesses: list[str] = Field(description="the witnesses whose cosignatures the log kept")


@router.post(
    "/v1/audit/log/cosignatures",
    response_model=CosignatureKept,
    summary="A witness hands the log its cosignature of a checkpoint (C2SP tlog-cosignature)",
    description="The body is the checkpoint note as the log signed it, with the witness's "
    "cosignature line appended (text/plain). No token: the cosignature is the credential. It "
    "is kept only if the log signed that checkpoint and the line verifies under a witness key "
    "of `/v1/audit/keys`; anything else is refused and nothing is kept.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    # 422: invalid-checkpoint-note, checkpoint-not-signed, unknown-witness, invalid-cosignature
    responses=problems.responses(415, 422),
)
async def submit_cosignature(request: Request) -> CosignatureKept:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/plain":
        raise UnsupportedMediaType("a cosigned note is text/plain", field="content-type")
    body = await request.body()  # bounded already by the app's body limit
    if len(body) > MAX_COSIGNED_NOTE:
        raise PayloadTooLarge(f"a cosigned note may not exceed {MAX_COSIGNED_NOTE} bytes")
    try:
        note = body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidArgument("the note is not UTF-8 text", field="note") from exc
    ds = downstream(request)
    resp = await ds.call(ds.audit.SubmitCosignature, pb.SubmitCosignatureRequest(note=note))
    return CosignatureKept(size=resp.size, witnesses=list(resp.witnesses))


@router.get(
    "/v1/audit/log/tile/{level}/{index:path}",
    response_class=Response,
    summary="A hash tile of the newest signed tree (C2SP tlog-tiles; hashes only)",
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **problems.responses(404),
    },
)
async def tile(
    request: Request, level: Annotated[int, Path(ge=0, le=63)], index: TileIndex
) -> Response:
    ds = downstream(request)
    resp = await ds.call(ds.audit.GetTile, pb.GetTileRequest(path=f"tile/{level}/{index}"))
    return Response(resp.hashes, media_type="application/octet-stream", headers=IMMUTABLE)
