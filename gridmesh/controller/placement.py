"""The placement loop: snapshot -> pure plan -> re-checked apply, whenever the grid changes."""

from __future__ import annotations

import logging

from gridmesh.controller import scheduler
from gridmesh.controller.grid import Grid

log = logging.getLogger("gridmesh.controller.placement")


def placement_round(grid: Grid) -> int:
    """One round: expire what is due, plan the pending GPRs, commit what still fits, re-plan overlays."""
    grid.expire_due()
    snapshot = grid.snapshot()
    placed = 0
    if snapshot.pending or snapshot.reservations:  # reservations turn into placements once clean
        plan = scheduler.plan(snapshot)
        placed = grid.apply_plan(plan)
        grid.note_unplaced(plan.unplaced)
        if placed:
            log.info("placed", extra={"placements": placed, "revision": snapshot.revision})
    # Placements change workspace membership; reports change keys and ports: the overlays follow both.
    grid.update_overlays()
    return placed


async def placement_loop(grid: Grid, interval_s: float = 1.0) -> None:
    """Runs a round on every change of the grid, and at least every ``interval_s`` (for expiry)."""
    while True:
        try:
            placement_round(grid)
        except Exception:
            # A bug in one round must not stop placement for good; the next change retries.
            log.exception("placement round failed")
        await grid.store.wait_for_change(grid.store.revision, timeout=interval_s)
