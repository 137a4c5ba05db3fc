"""Proto comments: lookup by descriptor path, and splitting into blocks and inline spans.

protoc keeps comments in `SourceCodeInfo` keyed by a path of field numbers
into the FileDescriptorProto (4 = message_type, 2 = field, ...). The renderers
receive comments as plain text; this module splits that text into paragraphs,
bullet lists and inline code spans so that Markdown and HTML can each escape
and lay it out in their own way.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

# Field numbers of the descriptor messages, as used in SourceCodeInfo paths.
FILE_PACKAGE = 2
FILE_MESSAGE = 4
FILE_ENUM = 5
FILE_SERVICE = 6
FILE_EXTENSION = 7
FILE_SYNTAX = 12
MESSAGE_FIELD = 2
MESSAGE_NESTED = 3
MESSAGE_ENUM = 4
MESSAGE_EXTENSION = 6
ENUM_VALUE = 2
SERVICE_METHOD = 2

Path = tuple[int, ...]


class CommentIndex:
    """The comments of one file, by descriptor path."""

    def __init__(self, fd: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path: dict[Path, str] = {}
        self._header = ""
        for loc in fd.source_code_info.location:
            path = tuple(loc.path)
            parts = [clean(loc.leading_comments), clean(loc.trailing_comments)]
            text = "\n\n".join(p for p in parts if p)
            if text and path not in self._by_path:
                self._by_path[path] = text
            if path in ((FILE_SYNTAX,), (FILE_PACKAGE,)) and not self._header:
                detached = [clean(c) for c in loc.leading_detached_comments]
                self._header = "\n\n".join(c for c in [*detached, clean(loc.leading_comments)] if c)

    def get(self, path: Path) -> str:
        return self._by_path.get(path, "")

    @property
    def header(self) -> str:
        """The file's leading comment (before `syntax` or `package`)."""
        return self._header


def clean(raw: str) -> str:
    """A raw protoc comment without the space after `//` and without outer blank lines."""
    return textwrap.dedent(raw).strip("\n").rstrip()


@dataclass(frozen=True)
class Paragraph:
    """Consecutive prose lines, joined with single spaces."""
    text: str


@dataclass(frozen=True)
class BulletList:
    """A list of items, each item's lines joined with single spaces."""
    items: tuple[str, ...]


Block = Paragraph | BulletList

_BULLET = re.compile(r"^\s*[*-]\s+")


def blocks(text: str) -> list[Block]:
    """Paragraphs (split at blank lines) and bullet lists ("* " or "- " items)."""
    out: list[Block] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.rstrip() for ln in chunk.splitlines() if ln.strip()]
        prose: list[str] = []
        items: list[str] = []
        for line in lines:
            if _BULLET.match(line):
                if prose:
                    out.append(Paragraph(" ".join(prose)))
                    prose = []
                items.append(_BULLET.sub("", line).strip())
            elif items and line.startswith((" ", "\t")):
                items[-1] += " " + line.strip()
            else:
                if items:
                    out.append(BulletList(tuple(items)))
                    items = []
                prose.append(line.strip())
        if items:
            out.append(BulletList(tuple(items)))
        if prose:
            out.append(Paragraph(" ".join(prose)))
    return out


_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def spans(text: str) -> list[tuple[bool, str]]:
    """Split inline text into (is_code, text) pieces at `backtick` code spans."""
    out: list[tuple[bool, str]] = []
    pos = 0
    for m in _CODE_SPAN.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos:m.start()]))
        out.append((True, m.group(2)))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def first_sentence(text: str) -> str:
    """The first sentence of a comment (up to the first ". " or the end of its first paragraph)."""
    para = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0].replace("\n", " ")
    m = re.search(r"\.(\s|$)", para)
    return para[:m.start() + 1] if m else para
