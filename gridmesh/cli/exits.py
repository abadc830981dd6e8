"""Exit codes of gridctl and the one-line error messages that go with them.

Scripts branch on the exit code, so it says whose move it is: 2 the caller's request is wrong, 3 the
thing is not there, 4 the server understood and said no, 5 the controller could not be reached (try
again later), 1 anything else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import grpc


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    REFUSED = 4
    UNREACHABLE = 5


# What each code means, for `gridctl --help`; kept next to the mapping so the two cannot drift.
EXIT_CODE_MEANINGS: Mapping[ExitCode, str] = {
    ExitCode.OK: "ok",
    ExitCode.ERROR: "any other server error, or --wait ended without the GPR running",
    ExitCode.USAGE: "usage error: bad flags or values, a bad config file, or INVALID_ARGUMENT",
    ExitCode.NOT_FOUND: "not found (NOT_FOUND)",
    ExitCode.REFUSED: (
        "refused by the server (FAILED_PRECONDITION, ALREADY_EXISTS, RESOURCE_EXHAUSTED, PERMISSION_DENIED, ABORTED)"
    ),
    ExitCode.UNREACHABLE: "controller unreachable (UNAVAILABLE, DEADLINE_EXCEEDED)",
}

_EXIT_BY_STATUS: Mapping[grpc.StatusCode, ExitCode] = {
    grpc.StatusCode.OK: ExitCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.USAGE,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.REFUSED,
    grpc.StatusCode.ALREADY_EXISTS: ExitCode.REFUSED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitCode.REFUSED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.REFUSED,
    grpc.StatusCode.ABORTED: ExitCode.REFUSED,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNREACHABLE,
}


def exit_code_for(status: grpc.StatusCode) -> ExitCode:
    """The exit code for a gRPC status the controller (or the channel) answered with."""
    return _EXIT_BY_STATUS.get(status, ExitCode.ERROR)


class CliError(Exception):
    """A failure gridctl reports itself (not a gRPC status): printed as ``error: <message>``."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def status_of(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a failed call.

    The sync stubs raise errors that are also ``grpc.Call``; anything else (never seen in practice)
    is reported as UNKNOWN rather than crashing the error path itself.
    """
    if isinstance(err, grpc.Call):
        return err.code(), err.details() or ""
    return grpc.StatusCode.UNKNOWN, str(err)


def rpc_error_line(status: grpc.StatusCode, details: str, controller: str) -> str:
    """``error: NOT_FOUND: gpr g-1 does not exist``: one line, whatever the server sent.

    When the controller could not be reached, the line names the address gridctl tried and where
    that address came from, since a wrong address is the usual cause.
    """
    text = " ".join(details.split()) or "(no details)"
    if exit_code_for(status) is ExitCode.UNREACHABLE:
        text = f"controller {controller}: {text}"
    return f"error: {status.name}: {text}"
