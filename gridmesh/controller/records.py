"""Stored wrappers for scheduler values the controller keeps between rounds."""

from __future__ import annotations

from dataclasses import dataclass

from gridmesh.controller.scheduler.types import Reservation


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    """A committed reservation: devices held for a GPR replica until they are reported clean.
    ``id`` is ``<gpr id>/<replica>``."""

    id: str
    reservation: Reservation
    revision: int = 0


def reservation_key(gpr_id: str, replica: int) -> str:
    """The id of the reservation for one GPR replica (at most one at a time)."""
    return f"{gpr_id}/{replica}"
