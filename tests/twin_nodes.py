"""Two identical node roots, one for our backend and one for the real Ganeti backend.

A call that changes files is made once on each root, from the same
starting state; answers are compared with each root replaced by <ROOT>,
and so are the files left behind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from real_noded_calls import our_call, real_call

from noded.context import NodeContext
from noded.paths import Paths

ROOT_MARK = "<ROOT>"


def make_node(base: Path) -> NodeContext:
    """A node "node1" below `base`, with its directories and file storage allowed and present."""
    paths = Paths(root=str(base / "node1"), hostname="node1")
    paths.ensure_dirs()
    Path(paths.file_storage_paths_file).write_text(
        f"{paths.file_storage_dir}\n{paths.shared_file_storage_dir}\n")
    os.makedirs(paths.file_storage_dir)
    os.makedirs(paths.shared_file_storage_dir)
    return NodeContext(paths=paths)


def normalize(value: Any, root: str) -> Any:
    """`value` with the node root written as <ROOT>."""
    if isinstance(value, str):
        return value.replace(root, ROOT_MARK)
    if isinstance(value, list):
        return [normalize(v, root) for v in value]
    if isinstance(value, dict):
        return {normalize(k, root): normalize(v, root) for k, v in value.items()}
    return value


def tree(directory: str) -> dict[str, str]:
    """Every entry below `directory`: relative name -> kind and permission bits."""
    found: dict[str, str] = {}
    for current, dirs, files in os.walk(directory):
        for name in dirs + files:
            full = os.path.join(current, name)
            st = os.lstat(full)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            found[os.path.relpath(full, directory)] = f"{kind} {oct(stat.S_IMODE(st.st_mode))}"
    return found


@dataclass
class Twins:
    """Our node and the real Ganeti's node, alike."""

    ours: NodeContext
    real: NodeContext

    @property
    def both(self) -> Iterator[Paths]:
        yield self.ours.paths
        yield self.real.paths

    def setup(self, action: Callable[[Paths], object]) -> None:
        """Do `action` on both roots."""
        for paths in self.both:
            action(paths)

    def answers(self, func: Callable[..., Any], name: str,
                args: Callable[[Paths], list[Any]]) -> tuple[list[Any], list[Any]]:
        """(ours, real) `[ok, payload]` of the call, roots replaced by <ROOT>."""
        ours = our_call(func, self.ours, *args(self.ours.paths))
        real = real_call(Path(self.real.paths.root), name, *args(self.real.paths))
        return normalize(ours, self.ours.paths.root), normalize(real, self.real.paths.root)

    def compare(self, func: Callable[..., Any], name: str, args: Callable[[Paths], list[Any]]) -> list[Any]:
        """Make the call on both nodes; the answers must be equal. Returns ours."""
        ours, real = self.answers(func, name, args)
        assert ours == real
        return ours

    def same_files(self, where: Callable[[Paths], str]) -> dict[str, str]:
        """The entries below `where` must be alike on both nodes; returns ours."""
        ours, real = (tree(where(p)) for p in self.both)
        assert ours == real
        return ours


def make_twins(tmp_path: Path) -> Twins:
    return Twins(ours=make_node(tmp_path / "ours"), real=make_node(tmp_path / "real"))
