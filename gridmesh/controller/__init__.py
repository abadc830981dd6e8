"""The gridmesh controller: decides where GPU work runs and tells each host its desired state.

Rules:
- ``api/`` is the only package that touches generated protobuf code (with gridmesh.common.convert).
- ``scheduler/`` is pure: a snapshot in, a plan out; no I/O, no clock, no unseeded randomness.
- ``store`` is the single writer of state; every change is one transaction at one new revision.
- Nothing outside the controller imports it.
"""
