"""The dossier gRPC servicer."""

from __future__ import annotations

from dmp.dossier.v1 import dossier_pb2_grpc


class DossierServicer(dossier_pb2_grpc.DossierServiceServicer):
    """The contract of proto/dmp/dossier/v1; each method answers UNIMPLEMENTED until issue #3."""
