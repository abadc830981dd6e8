"""gridctl: the operator command line of gridmesh (entry point ``gridmesh.cli.main:main``).

Rules:
- gridctl speaks only the gridmesh.v1 wire contract; it never imports controller or agent code.
- Controller address, first found wins: ``--controller ADDR``; env ``GRIDMESH_CONTROLLER``;
  ``controller = "host:port"`` in the TOML file at ``$GRIDMESH_CONFIG`` (which must then exist) or
  ``~/.config/gridmesh/gridctl.toml`` (optional); else ``127.0.0.1:7443``.
- Exit codes (``exits.ExitCode`` is the one table; ``gridctl --help`` prints it):
  0 ok; 1 any other server error, or a ``--wait`` that ended without the GPR running;
  2 usage error (bad flags or values, a bad config file, or the server said INVALID_ARGUMENT);
  3 not found (NOT_FOUND); 4 refused by the server (FAILED_PRECONDITION, ALREADY_EXISTS,
  RESOURCE_EXHAUSTED, PERMISSION_DENIED, ABORTED); 5 controller unreachable (UNAVAILABLE,
  DEADLINE_EXCEEDED).
- An error is one line on stderr, ``error: <STATUS>: <details>`` for server errors; never a traceback.
- stdout carries only results (table, json or yaml); progress and errors go to stderr.
- Pure where it decides (``parse``, ``output``, ``exits``, ``enums``), thin where it touches
  (``client`` owns the channel, ``main`` wires typer to both).
"""
