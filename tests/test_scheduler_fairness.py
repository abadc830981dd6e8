"""Weighted max-min fairness under saturation, on dominant share across GPU models.

Among GPRs of equal priority the workspace with the lowest weighted dominant share goes next, workspaces
under their guarantee first. Under saturation equal weights end within ±2% of the max-min share and
weights are honoured in proportion; Jain's index over the weighted shares is reported (and checked).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from gridmesh.common.model import AllocationId, WorkspaceName
from gridmesh.controller.model import Quota, Workspace
from gridmesh.controller.scheduler import Snapshot, plan
from gridmesh.controller.scheduler import harness as h


def jain(xs: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if any(xs) else 1.0


def saturated(weights: dict[str, float], gpus: int = 400, per_ws: int = 300, *, hosts_model: h.Model = h.H100,
              quotas: dict[str, Quota] | None = None) -> Snapshot:
    hosts = [h.host(f"h{i:03d}", gpus=8, model=hosts_model) for i in range(gpus // 8)]
    workspaces = [Workspace(name=WorkspaceName(w), fair_share_weight=wt, quota=(quotas or {}).get(w, Quota()))
                  for w, wt in weights.items()]
    # Same priority; ages interleaved so that age alone would favour nobody in particular.
    pending = [h.gpr(f"{w}-{i:04d}", workspace=w, created_at=float(i * len(weights) + j))
               for j, w in enumerate(weights) for i in range(per_ws)]
    return h.snapshot(hosts, pending, workspaces=workspaces)


def shares(snap: Snapshot) -> Counter[str]:
    gprs = {g.id: g for g in snap.pending}
    return Counter(gprs[p.gpr_id].spec.workspace for p in plan(snap).placements)


def test_equal_weights_get_equal_shares_within_two_percent(capsys: pytest.CaptureFixture[str]) -> None:
    got = shares(saturated({"a": 1, "b": 1, "c": 1, "d": 1}))
    assert sum(got.values()) == 400
    for ws in "abcd":
        assert abs(got[ws] - 100) <= 2, got
    index = jain([float(got[w]) for w in "abcd"])
    with capsys.disabled():
        print(f"\nequal weights: {dict(sorted(got.items()))}, Jain's index {index:.4f}")
    assert index >= 0.999


def test_weights_are_honoured_in_proportion(capsys: pytest.CaptureFixture[str]) -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    got = shares(saturated(weights, per_ws=400))
    for ws, wt in weights.items():
        assert abs(got[ws] - 40 * wt) <= 0.02 * 40 * wt + 1, got
    index = jain([got[w] / wt for w, wt in weights.items()])
    with capsys.disabled():
        print(f"\nweights 1:2:3:4: {dict(sorted(got.items()))}, Jain's index over share/weight {index:.4f}")
    assert index >= 0.999


def test_a_workspace_that_asks_for_less_than_its_share_gets_all_it_asks_and_the_rest_is_shared() -> None:
    snap = saturated({"small": 1, "b": 1, "c": 1})
    small_only = [g for g in snap.pending if g.spec.workspace != "small" or int(g.id.split("-")[1]) < 40]
    got = shares(Snapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, "pending": tuple(small_only)}))
    assert got["small"] == 40 and got["b"] == got["c"] == 180  # max-min: the unused share is split


def test_the_share_that_counts_is_the_dominant_one_across_gpu_models() -> None:
    # 16 H100 and 160 L4. Both workspaces hold 8 GPUs, but 8 of 16 H100s is half of the scarce model and
    # 8 of 160 L4s a twentieth: by dominant share the L4 user is far behind and is served first, though
    # its GPR is younger and a plain GPU count would call them even.
    hosts = [h.host(f"hh{i}", gpus=8) for i in range(2)] + [h.host(f"ll{i:02d}", gpus=8, model=h.L4)
                                                             for i in range(20)]
    h100_user = h.running(h.gpr("h100-old", workspace="h100", count=8), 0.0)
    l4_user = h.running(h.gpr("l4-old", workspace="l4", count=8), 0.0)
    allocations = [h.allocation(h100_user, hosts[0], range(8))]
    allocations += [h.allocation(l4_user, x, [0]) for x in hosts[2:10]]
    # Every other GPU is taken by a third workspace, but one H100.
    filler = h.running(h.gpr("filler", workspace="other"), 0.0)
    allocations += [replace(h.allocation(filler, hosts[1], range(7)), id=AllocationId("alloc-filler-h"))]
    allocations += [replace(h.allocation(filler, x, range(1 if i < 8 else 0, 8)), id=AllocationId(f"alloc-f-{i}"),
                            replica=i + 1) for i, x in enumerate(hosts[2:])]
    pending = [h.gpr("from-h100-user", workspace="h100", created_at=1.0),
               h.gpr("from-l4-user", workspace="l4", created_at=2.0)]
    workspaces = [Workspace(name=WorkspaceName(w)) for w in ("h100", "l4", "other")]
    result = plan(h.snapshot(hosts, pending, workspaces=workspaces, allocations=allocations,
                             gprs=[h100_user, l4_user, filler]))
    assert [p.gpr_id for p in result.placements] == ["from-l4-user"]


def test_guaranteed_gpus_are_served_before_anyone_borrows() -> None:
    quotas = {"guaranteed": Quota(guaranteed_gpus=150)}
    got = shares(saturated({"guaranteed": 1, "other": 1}, gpus=200, quotas=quotas))
    assert got == Counter({"guaranteed": 150, "other": 50})


def test_what_a_workspace_already_holds_counts_towards_its_share() -> None:
    snap = saturated({"a": 1, "b": 1}, gpus=200)
    held = h.running(h.gpr("a-old", workspace="a", count=8), 0.0)
    first = snap.hosts[0]
    snap = Snapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__},
                       "allocations": (h.allocation(held, first, range(8)),), "gprs": {held.id: held}})
    got = shares(snap)
    assert got["a"] + 8 == pytest.approx(got["b"], abs=1)
