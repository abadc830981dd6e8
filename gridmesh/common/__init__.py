"""gridmesh.common: code shared by controller, agent and cli; imports nothing from them.

Rules:
- Nothing here imports ``gridmesh.controller``, ``gridmesh.agent`` or ``gridmesh.cli``; they import this.
- Only the conversion edge touches generated protobuf code; everything else is plain Python.
- No third-party dependencies beyond what the whole project needs, so every entry point can use it.
"""
