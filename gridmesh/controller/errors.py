"""Errors the controller raises for the client's or the host's fault, mapped to gRPC statuses at the edge.

Each says whose fault it is and what is allowed. Anything else that escapes a handler is a bug in
the controller: it is logged with its traceback and the client sees only INTERNAL with a reference.
"""

from __future__ import annotations


class GridError(Exception):
    """Base of the errors a client may see; ``code`` names the gRPC status."""

    code = "UNKNOWN"


class InvalidArgument(GridError):
    """A request field is wrong: names the field, the value, and what is allowed."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(GridError):
    code = "NOT_FOUND"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")


class AlreadyExists(GridError):
    code = "ALREADY_EXISTS"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")


class FailedPrecondition(GridError):
    code = "FAILED_PRECONDITION"


class Unimplemented(GridError):
    code = "UNIMPLEMENTED"
