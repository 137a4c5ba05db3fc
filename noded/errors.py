"""Errors a procedure raises to answer a request with a failure."""

from __future__ import annotations


class RpcFail(Exception):
    """An expected failure of a procedure, answered as `[false, "<message>"]`.

    The message is shown to the administrator as it is, so it says what went
    wrong and, where it can, what to do about it (Ganeti's backend.RPCFail).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotImplementedOnNode(RpcFail):
    """The procedure exists in the protocol but is not implemented on this node yet."""

    def __init__(self, name: str) -> None:
        super().__init__(f"not implemented yet on this node: {name}")
        self.procedure = name


class InvalidArguments(RpcFail):
    """The request's arguments do not fit the procedure (count or types)."""
