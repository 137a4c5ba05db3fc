"""The table of legacy procedures implemented by the backends.

A backend is a plain function `func(ctx, *args)` taking the procedure's
positional arguments as native JSON values (dicts, lists, str, int, float,
bool, None) in legacy order, and returning the legacy result in the same
native form. It raises `noded.errors.RpcFail` for expected failures. Functions
marked `blocking` run in a worker thread; the others run on the event loop
and must not block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__ganeti_procedure__"


@dataclass(frozen=True)
class Procedure:
    """One implemented legacy procedure."""

    name: str
    func: Callable[..., Any]
    blocking: bool


def procedure(name: str, *, blocking: bool = True) -> Callable[[F], F]:
    """Mark a backend function as the implementation of a legacy procedure."""

    def mark(func: F) -> F:
        setattr(func, _ATTR, Procedure(name=name, func=func, blocking=blocking))
        return func

    return mark


def collect(modules: Iterable[ModuleType]) -> dict[str, Procedure]:
    """Gather the marked functions of the given modules into one table."""
    table: dict[str, Procedure] = {}
    for module in modules:
        for value in vars(module).values():
            proc = getattr(value, _ATTR, None)
            if isinstance(proc, Procedure):
                if proc.name in table and table[proc.name].func is not proc.func:
                    raise ValueError(f"procedure {proc.name} is implemented twice")
                table[proc.name] = proc
    return table
