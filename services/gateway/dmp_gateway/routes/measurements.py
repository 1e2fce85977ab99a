"""Health measurements: weight, height, blood pressure, heart rate, glycaemia, waist, and the
BMI computed from them — series read by the care team as the profile is."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso, stamp
from dmp_gateway.security import Caller

router = APIRouter(tags=["measurements"])

KINDS = "weight, height, blood_pressure, heart_rate, glycaemia, waist (bmi: computed, read only)"
UNITS = "UCUM: kg, cm, mm[Hg], /min, g/L (or mg/dL, mmol/L: stored in g/L), cm"


class MeasurementIn(BaseModel):
    kind: str = Field(max_length=30, description=KINDS)
    value: float | None = Field(default=None, description="every kind but blood_pressure")
    systolic: float | None = Field(default=None, description="blood_pressure, mm[Hg]")
    diastolic: float | None = Field(default=None, description="blood_pressure, mm[Hg]")
    unit: str = Field(max_length=20, description=UNITS)
    measured_at: AwareDatetime = Field(description="not in the future")
    note: str = Field(default="", max_length=500)


class MeasurementOut(BaseModel):
    id: str
    kind: str
    value: float | None = None
    systolic: float | None = None
    diastolic: float | None = None
    unit: str
    measured_at: str
    source: str = Field(description="patient, professional or device (connected apps)")
    note: str | None = None
    recorded_at: str
    computed: bool = Field(description="a BMI computed from a weight and a height")
    own: bool = Field(description="written by the caller, who alone may delete it")


class Series(BaseModel):
    items: list[MeasurementOut] = Field(description="oldest first, by measured_at")


def measurement_out(m: pb.HealthMeasurement, who: Caller) -> MeasurementOut:
    pressure = m.kind == "blood_pressure"
    return MeasurementOut(
        id=m.id,
        kind=m.kind,
        value=None if pressure else m.value,
        systolic=m.systolic if pressure else None,
        diastolic=m.diastolic if pressure else None,
        unit=m.unit,
        measured_at=iso(m.measured_at),
        source=m.source,
        note=m.note or None,
        recorded_at=iso(m.recorded_at),
        computed=m.computed,
        own=not m.computed and m.author == who.actor_id,
    )


@router.get(
    "/v1/dossiers/{ins}/measurements",
    response_model=Series,
    response_model_exclude_none=True,
    summary="The measurements, oldest first (read as the medical profile is)",
    responses=problems.responses(403, 404),
)
async def list_measurements(
    ins: str,
    request: Request,
    who: Caller,
    kind: Annotated[str, Query(max_length=30, description=KINDS)] = "",
    since: Annotated[datetime | None, Query(alias="from", description="inclusive")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="inclusive")] = None,
) -> Series:
    query = pb.ListMeasurementsRequest(ins=ins, kind=kind)
    if since is not None:
        stamp(query.measured_from, since, "from")
    if until is not None:
        stamp(query.measured_to, until, "to")
    ds = downstream(request)
    resp = await ds.call(ds.dossier.ListMeasurements, query, token=who.token)
    return Series(items=[measurement_out(m, who) for m in resp.measurements])


@router.post(
    "/v1/dossiers/{ins}/measurements",
    status_code=201,
    response_model=MeasurementOut,
    response_model_exclude_none=True,
    summary="Add a measurement (the patient, or a professional who may read the profile)",
    responses=problems.responses(403, 404, 409),
)
async def add_measurement(
    ins: str, body: MeasurementIn, request: Request, who: Caller
) -> MeasurementOut:
    add = pb.AddMeasurementRequest(
        ins=ins,
        kind=body.kind,
        value=body.value or 0.0,
        systolic=body.systolic or 0.0,
        diastolic=body.diastolic or 0.0,
        unit=body.unit,
        note=body.note,
    )
    stamp(add.measured_at, body.measured_at, "measured_at")
    ds = downstream(request)
    resp = await ds.call(ds.dossier.AddMeasurement, add, token=who.token)
    return measurement_out(resp.measurement, who)


@router.delete(
    "/v1/dossiers/{ins}/measurements/{measurement_id}",
    status_code=204,
    summary="Delete a measurement (its author only)",
    responses=problems.responses(403, 404, 409),
)
async def delete_measurement(ins: str, measurement_id: str, request: Request, who: Caller) -> None:
    ds = downstream(request)
    await ds.call(
        ds.dossier.DeleteMeasurement,
        pb.DeleteMeasurementRequest(ins=ins, measurement_id=measurement_id),
        token=who.token,
    )
