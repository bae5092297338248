"""Reading the docs as tests need them: fenced blocks, sections, table columns; and whether
a message the docs quote is still one the code produces."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

from tests.examples.conftest import REPO

#: Where the messages users see come from.
SOURCES = ("hpcbridge", "adapters", "functions")

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^(#{1,6}) +(.+?) *$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"'?<[^<>\n]+>'?")


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced block: its info string (``sh``, ``json``, ...), its text, and the title of
    the section it is in."""

    info: str
    text: str
    section: str
    start: int  # offset of the opening fence in the document


def blocks(text: str) -> list[Block]:
    headings = [(m.start(), m.group(2)) for m in _HEADING.finditer(_without_fences(text))]
    found = []
    for match in _FENCE.finditer(text):
        section = ""
        for offset, title in headings:
            if offset < match.start():
                section = title
        found.append(Block(match.group(1).strip(), match.group(2), section, match.start()))
    return found


def _without_fences(text: str) -> str:
    """``text`` with every fenced block blanked out (same length), so that a ``#`` line in
    a block is not taken for a heading."""
    return _FENCE.sub(lambda m: " " * len(m.group(0)), text)


def section(text: str, title: str, *, nested: bool = False) -> str:
    """The text under the heading ``title`` up to the next heading; with ``nested``, up to
    the next heading of the same or a higher level (its subsections included)."""
    plain = _without_fences(text)
    headings = list(_HEADING.finditer(plain))
    for index, heading in enumerate(headings):
        if heading.group(2) == title:
            level = len(heading.group(1)) if nested else 6
            end = next((h.start() for h in headings[index + 1:] if len(h.group(1)) <= level),
                       len(text))
            return text[heading.end():end]
    raise KeyError(title)


def first_column(text: str) -> list[str]:
    """The backticked names in the first column of the tables in ``text``."""
    names = []
    for line in text.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names += re.findall(r"`([^`]+)`", cells[1])
    return names


@functools.cache
def source_text() -> str:
    """The code, with string literals that continue on the next line joined, so that a
    message split over two lines of code reads as one."""
    parts = []
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            parts.append(path.read_text())
    text = "\n".join(parts)
    return re.sub(r"([\"'])\s*\n\s*[rbf]*([\"'])", "", text)


def message_fragments(message: str) -> list[str]:
    """The literal parts of a quoted message: what is left around its ``<placeholders>``
    (a placeholder that the code formats with ``!r`` may stand in quotes)."""
    parts = []
    for part in _PLACEHOLDER.split(message):
        # A message may wrap another ("unavailable, retry later: <the adapter's>"): its
        # pieces between ": " come from different places in the code.
        parts += [piece.strip() for piece in part.split(": ") if piece.strip()]
    return parts


def missing_from_source(message: str) -> list[str]:
    """The literal parts of ``message`` that no source file contains."""
    code = source_text()
    return [part for part in message_fragments(message) if part not in code]


def read(path: Path) -> str:
    return path.read_text()


def template(message: str) -> re.Pattern[str]:
    """A quoted message as a pattern: each ``<placeholder>`` stands for some text."""
    parts = re.split(r"<[^<>\n]+>", message)
    return re.compile(".+?".join(re.escape(part) for part in parts), re.DOTALL)


def quoted_messages(text: str) -> list[str]:
    """The messages of a doc's ``text`` blocks: each line, or the ``message`` (or
    ``error``) of a line that is a JSON object."""
    found = []
    for block in blocks(text):
        if block.info != "text":
            continue
        for line in block.text.splitlines():
            if line.startswith("{"):
                document = json.loads(line)
                found.append(document.get("message") or document["error"])
            elif line.strip():
                found.append(line.strip())
    return found
