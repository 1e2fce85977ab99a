"""The audit gRPC servicer: the access log (rule 10), signed tree heads and Merkle proofs."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime

import grpc
import structlog

from dmp.audit.v1 import audit_pb2 as pb
from dmp.audit.v1 import audit_pb2_grpc
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_audit.entry import Entry, TreeHead, raw_public_key
from dmp_audit.log import AuditLog
from dmp_audit.merkle import leaf_hash
from dmp_audit.store import AuditStore
from dmp_audit.tiles import BadTilePath, Tile
from dmp_audit.witnesses import CosignatureRefused, Witness, check_submission, published
from dmp_kit.auth import Principal, caller
from dmp_kit.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from dmp_kit.identifiers import validate_ins
from dmp_kit.proto import timestamp
from dmp_kit.rpc.client import call_options
from dmp_kit.service_auth import EXPORT_READER

# Tree heads, proofs and the verification keys are public, like a certificate-transparency
# log's: they hold hashes only, and anyone must be able to check the log.
PUBLIC_METHODS = frozenset(
    f"/dmp.audit.v1.AuditService/{m}"
    for m in (
        "GetCheckpoint",
        "GetInclusionProof",
        "GetConsistencyProof",
        "ListPublicKeys",
        "GetTile",
        "SubmitCosignature",
    )
)
DEFAULT_PAGE = 20
SCAN_LIMIT = 2000  # entries looked at per page when the caller sees only their own
NAME_TTL_SECONDS = 600.0
NAME_CACHE = 10_000
# A trail's read waits this long at most for the log to hold what was recorded before it.
CATCH_UP_SECONDS = 2.0

log = structlog.get_logger("dmp.audit")


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        audit: AuditLog,
        store: AuditStore,
        identity: identity_pb2_grpc.IdentityServiceStub,
        deadline: float,
        stream_end: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.audit = audit
        # the AUDIT stream's last sequence: what a trail's reader must find in the log
        self.stream_end = stream_end
        self.store = store
        self.identity = identity
        self.deadline = deadline
        self._names: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.witnesses = [Witness.of(vkey) for vkey in audit.settings.audit_witnesses]

    # the access log ------------------------------------------------------------------------

    async def ListAccessLog(
        self, request: pb.ListAccessLogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAccessLogResponse:
        who = caller()
        ins = validate_ins(request.ins)
        page = request.page_size or DEFAULT_PAGE
        if not 0 < page <= self.audit.settings.access_log_page_max:
            raise InvalidArgument(
                f"page_size must be between 1 and {self.audit.settings.access_log_page_max}",
                field="page_size",
            )
        own_only, after = await self._view(who, ins)
        await self._ready(tree=False)
        await self._caught_up(context)
        end = await self.audit.trail_length(ins)
        if request.cursor:
            if not request.cursor.isdigit() or int(request.cursor) > end:
                raise InvalidArgument("the cursor is not one this log gave", field="cursor")
            end = int(request.cursor)
        entries: list[pb.AccessLogEntry] = []
        position = end
        while position > 0 and len(entries) < page and end - position < SCAN_LIMIT:
            rows = await self.audit.trail_page(
                ins, position, min(SCAN_LIMIT - (end - position), page if not own_only else 200)
            )
            if not rows:
                break
            for n, seq, chunk in rows:
                position = n
                data = await self.audit.entry(seq, chunk)
                entry = Entry.from_bytes(data)
                if own_only and not (
                    entry.actor_kind == who.kind and entry.actor_id == who.actor_id
                ):
                    continue
                if after is not None and _micros(entry.at) <= after:
                    continue  # the purged dossier's: not for the new one's readers
                entries.append(await self._shown(entry, data))
                if len(entries) == page:
                    break
        return pb.ListAccessLogResponse(entries=entries, next=str(position) if position else "")

    async def _caught_up(self, context: grpc.aio.ServicerContext) -> None:
        """Every access recorded before this read (its record acknowledged by the stream) is
        in the trail it reads: the appender's linger is cut short for it. A patient checking
        who read their file just after a read sees that read. If the log cannot catch up in
        time (its appender down or far behind), the trail is read as it stands."""
        if self.stream_end is None:
            return
        remaining = context.time_remaining()
        within = CATCH_UP_SECONDS if remaining is None else min(CATCH_UP_SECONDS, remaining / 2)
        started = time.monotonic()
        try:
            target = await asyncio.wait_for(self.stream_end(), within)
        except Exception as exc:  # the stream unreachable: the trail as the log holds it
            log.warning("audit_stream_end_unknown", error=type(exc).__name__)
            return
        if not await self.audit.reach(target, max(0.0, within - (time.monotonic() - started))):
            log.warning(
                "audit_trail_read_behind", stream_seq=target, log_stream_last=self.audit.stream_last
            )

    async def _view(self, who: Principal, ins: str) -> tuple[bool, int | None]:
        """Rule 10: the patient, their legal representatives (as the patient would, while the
        dossier is open) and the attending physician read the whole trace; any other
        professional, the entries about what they did themselves; the dossier service's
        account building the patient's export of their data, as the patient; nobody else
        anything.
        Returns (own entries only, hide entries up to this time): after a purge, whoever reads
        the trace by a role in the new dossier sees nothing of the old one's."""
        if who.kind == "patient" and who.ins == ins:
            return False, None
        if who.kind == "system" and who.has_role(EXPORT_READER):
            # The dossier service building the patient's export: as the patient reads it.
            return False, None
        readers = await self.store.readers(ins)
        if who.kind == "patient" and who.ins and who.ins in readers.representatives:
            return False, readers.purged_order
        if who.kind == "professional" and who.rpps:
            return readers.attending_physician != who.rpps, readers.purged_order
        raise PermissionDenied(
            "the access log is for the patient and the professionals who accessed it",
            slug="not-your-trace",
        )

    async def _shown(self, entry: Entry, data: bytes) -> pb.AccessLogEntry:
        return pb.AccessLogEntry(
            seq=entry.seq,
            at=timestamp(datetime.fromisoformat(entry.at)),
            actor=pb.AuditActor(
                kind=entry.actor_kind,
                id=entry.actor_id,
                name=entry.actor_name or await self._name(entry),
                profession=entry.actor_profession,
            ),
            action=entry.action,
            document_id=entry.document_id,
            mode=entry.mode,
            outcome=entry.outcome,
            reason=entry.reason,
            query=entry.query,
            entry=data.decode(),
            leaf_hash=leaf_hash(data).hex(),
        )

    async def _name(self, entry: Entry) -> str:
        """Professionals' names from the directory (cached); others by what they are."""
        if entry.actor_kind == "patient" and entry.actor_id not in ("", entry.ins):
            return "a person acting for the patient"
        if entry.actor_kind != "professional":
            return {"patient": "the patient", "service": "the platform"}.get(
                entry.actor_kind, entry.actor_id
            )
        cached = self._names.get(entry.actor_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < NAME_TTL_SECONDS:
            return cached[1]
        try:
            found = await self.identity.LookupProfessional(
                identity_pb2.LookupProfessionalRequest(rpps=entry.actor_id),
                **call_options(self.deadline),
            )
        except grpc.aio.AioRpcError:
            return ""  # the trace still shows the RPPS; a name is a courtesy
        pro = found.professional
        name = f"{pro.given_name} {pro.family_name}".strip()
        self._names[entry.actor_id] = (now, name)
        while len(self._names) > NAME_CACHE:
            self._names.popitem(last=False)
        return name

    # tree heads and proofs -------------------------------------------------------------------

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCheckpointResponse:
        await self._ready()
        if request.witnessed:
            head, note = await self._witnessed()
        else:
            head, note = self.audit.checkpoint(), self.audit.checkpoint_note()
        vkeys = [w.vkey for w in self.witnesses]
        lines = await self.store.cosignature_lines(head.size, vkeys) if vkeys else []
        note = published(note, lines)
        return pb.GetCheckpointResponse(checkpoint=_head(head), note=note.decode())

    async def _witnessed(self) -> tuple[TreeHead, bytes]:
        """The newest head a configured witness cosigned, and its note."""
        size = await self.store.newest_cosigned([w.vkey for w in self.witnesses])
        head = None if size is None else await self.store.head_at(size)
        if head is None:
            raise NotFound("no witness this log knows has cosigned a checkpoint yet")
        return head, self.audit.note_at(head)

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInclusionProofResponse:
        await self._ready()
        size = self._tree_size(request.tree_size, "tree_size")
        if not 0 <= request.seq < size:
            raise InvalidArgument(
                f"seq must be an entry of the tree of size {size} (0 to {size - 1})",
                field="seq",
            )
        tree = self.audit.tree
        return pb.GetInclusionProofResponse(
            leaf_index=request.seq,
            tree_size=size,
            leaf_hash=(await tree.leaf(request.seq)).hex(),
            proof=[h.hex() for h in await tree.inclusion_proof(request.seq, size)],
        )

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsistencyProofResponse:
        await self._ready()
        to_size = self._tree_size(request.to_size, "to")
        if not 0 < request.from_size <= to_size:
            raise InvalidArgument(f"from must be between 1 and {to_size}", field="from")
        proof = await self.audit.tree.consistency_proof(request.from_size, to_size)
        return pb.GetConsistencyProofResponse(proof=[h.hex() for h in proof])

    async def ListPublicKeys(
        self, request: pb.ListPublicKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPublicKeysResponse:
        return pb.ListPublicKeysResponse(
            keys=[
                pb.PublicKey(
                    key_id=key_id,
                    algorithm="Ed25519",
                    public_key=base64.b64encode(raw_public_key(key.public_key)).decode(),
                    verifier_key=key.verifier_key,
                    not_before=timestamp(key.not_before),
                    not_after=timestamp(key.not_after),
                    role="log",
                    name=key.verifier_key.split("+", 1)[0] or self.audit.notes.name,
                )
                for key_id, key in self.audit.keys.items()
            ]
            + self._witness_keys()
        )

    def _witness_keys(self) -> list[pb.PublicKey]:
        return [
            pb.PublicKey(
                key_id=w.key_id,
                algorithm="Ed25519",
                public_key=w.public_key,
                verifier_key=w.vkey,
                role="witness",
                name=w.name,
            )
            for w in self.witnesses
        ]

    async def SubmitCosignature(
        self, request: pb.SubmitCosignatureRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitCosignatureResponse:
        """Keep a configured witness's cosignature of a checkpoint this log signed; refuse
        anything else whole, keeping nothing (the signatures are the only credential)."""
        await self._ready()
        try:
            checkpoint, cosigned = check_submission(
                request.note.encode(), self.audit.notes.verifier_key, self.witnesses
            )
        except CosignatureRefused as exc:
            raise InvalidArgument(str(exc), field="note", slug=exc.slug) from exc
        head = await self.store.head_at(checkpoint.size)
        if head is None or bytes.fromhex(head.root_hash) != checkpoint.root_hash:
            raise InvalidArgument(
                f"this log signed no tree of size {checkpoint.size} with that root hash",
                field="note",
                slug="checkpoint-not-signed",
            )
        for one in cosigned:
            await self.store.save_cosignature(
                checkpoint.size, checkpoint.root_hash, one.witness.vkey, one.timestamp, one.line
            )
        return pb.SubmitCosignatureResponse(
            size=checkpoint.size, witnesses=sorted({one.witness.name for one in cosigned})
        )

    async def GetTile(
        self, request: pb.GetTileRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTileResponse:
        await self._ready()
        try:
            tile = Tile.parse(request.path)
        except BadTilePath as exc:
            raise InvalidArgument(str(exc), field="path") from exc
        hashes = await self.audit.tile(tile)
        if hashes is None:
            raise NotFound(
                f"the newest signed tree ({self.audit.checkpoint().size} entries) has no such tile"
            )
        return pb.GetTileResponse(hashes=hashes)

    def _tree_size(self, asked: int, field: str) -> int:
        """A size the log can prove against: by default the newest signed head's."""
        if not asked:
            return self.audit.checkpoint().size
        if not 0 < asked <= self.audit.size:
            raise InvalidArgument(
                f"{field} must be between 1 and the log's size ({self.audit.size})", field=field
            )
        return asked

    async def _ready(self, tree: bool = True) -> None:
        """The log can serve the read: `tree`, the tree is known; else only the trails, which
        a replica that does not append reads from the database, loaded or not (the sequencer
        refuses while it reloads, its trails' heads being read again). A replica that does not
        append follows the sequencer every lease margin; one that has not followed yet (just
        started, or the sequencer's first head signed since) reads the stored edge and head
        now rather than refuse the read."""
        if self.audit.loaded:
            return
        if not self.audit.may_append():
            if not tree:
                return
            try:
                await self.audit.follow()
            except Exception as exc:  # the database unreachable, or the log not the tree's
                log.warning("audit_follow_failed", error=type(exc).__name__)
        if not self.audit.loaded:
            raise Unavailable("the audit log is loading")


def _micros(at: str) -> int:
    """An entry's time in microseconds since the epoch, the unit events are ordered in."""
    moment = datetime.fromisoformat(at)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _head(head: TreeHead) -> pb.SignedTreeHead:
    return pb.SignedTreeHead(
        size=head.size,
        root_hash=head.root_hash,
        signature=head.signature,
        key_id=head.key_id,
        timestamp=timestamp(datetime.fromisoformat(head.timestamp)),
    )
