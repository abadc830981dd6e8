"""The gridmesh.v1 enums as people type and read them.

Wire names are long (``GPR_STATE_RUNNING``); people type ``running`` or ``time-sliced`` and read
``RUNNING`` for states and ``far_edge`` for kinds. Everything is derived from the proto descriptors,
so a value added to the contract shows up here without an edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from gridmesh.v1 import types_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)


class EnumParseError(ValueError):
    """The text names no value of the enum; the message lists the accepted names."""


@dataclass(frozen=True, slots=True)
class ProtoEnum(Generic[V]):
    """One proto enum with the prefix its value names share and how to show them."""

    wrapper: _EnumTypeWrapper[V]
    prefix: str  # "GPR_STATE_"
    noun: str  # "GPR state", used in error messages
    lower: bool  # show "far_edge" rather than "RUNNING": kinds read lower, states upper

    def choices(self) -> list[str]:
        """The names a person may type, lower-case, without UNSPECIFIED."""
        return [
            value.name.removeprefix(self.prefix).lower()
            for value in self.wrapper.DESCRIPTOR.values
            if value.number != 0  # UNSPECIFIED, never a choice
        ]

    def parse(self, text: str) -> V:
        """``running``, ``RUNNING``, ``GPR_STATE_RUNNING`` -> the value; ``-`` may stand for ``_``."""
        name = text.strip().upper().replace("-", "_").removeprefix(self.prefix)
        if name and name != "UNSPECIFIED" and self.prefix + name in self.wrapper.DESCRIPTOR.values_by_name:
            return self.wrapper.Value(self.prefix + name)
        raise EnumParseError(f"{text!r} is not a {self.noun}; use one of: {', '.join(self.choices())}")

    def show(self, value: V) -> str:
        """The short name, ``-`` for UNSPECIFIED, the number for a value newer than this gridctl."""
        if value not in self.wrapper.DESCRIPTOR.values_by_number:
            return str(int(value))
        name = self.wrapper.Name(value).removeprefix(self.prefix)
        if name == "UNSPECIFIED":
            return "-"
        return name.lower() if self.lower else name

    def show_name(self, wire_name: str) -> str:
        """The short form of a value given by its wire name, as events carry states (strings)."""
        if not wire_name:
            return "-"
        short = wire_name.removeprefix(self.prefix)
        return short.lower() if self.lower else short


SITE_TIER = ProtoEnum(types_pb2.SiteTier, "SITE_TIER_", "site tier", lower=True)
PRIORITY_TIER = ProtoEnum(types_pb2.PriorityTier, "PRIORITY_TIER_", "priority tier", lower=False)
SHARING_MODE = ProtoEnum(types_pb2.SharingMode, "SHARING_MODE_", "sharing mode", lower=True)
PLACEMENT_POLICY = ProtoEnum(types_pb2.PlacementPolicy, "PLACEMENT_POLICY_", "placement policy", lower=True)
GPR_STATE = ProtoEnum(types_pb2.GprState, "GPR_STATE_", "GPR state", lower=False)
HOST_STATE = ProtoEnum(types_pb2.HostState, "HOST_STATE_", "host state", lower=False)
GPU_HEALTH = ProtoEnum(types_pb2.GpuHealth, "GPU_HEALTH_", "GPU health", lower=False)
ALLOCATION_STATE = ProtoEnum(types_pb2.AllocationState, "ALLOCATION_STATE_", "allocation state", lower=False)
