"""Lists printed as they arrive (SPEC 11.4 "Lists"): `vigocli envoys list` page by page and
`vigocli deadletters list` record by record, in bounded memory, stopped at `--limit`.

- `StreamedTable`: the header and the rows of each chunk as soon as they come. A column
  is as wide as the header, the first chunk and its minimum need; a later, wider cell
  widens its column from its chunk on (the lines above stay as they were printed). Every
  cell is escaped (`topics.escape.printable`, SPEC 11.4) before it is measured.
- `StreamedJson`: `{"<name>": [...], <closing fields>}` written item by item, the same
  text `json.dumps(doc, indent=2)` gives for the whole document.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from topics.escape import printable


def _write(text: str) -> None:
    click.echo(text, nl=False)


class StreamedTable:
    def __init__(
        self,
        header: Sequence[str],
        minimum: Sequence[int] = (),
        write: Callable[[str], None] = _write,
    ) -> None:
        self.header = [printable(cell) for cell in header]
        self.widths = [max([len(cell), *minimum[i : i + 1]]) for i, cell in enumerate(self.header)]
        self.write = write
        self.started = False
        self.count = 0

    def rows(self, rows: Iterable[Sequence[str]]) -> None:
        """Print one chunk of rows (the header first, before the first row)."""
        shown = [[printable(str(cell)) for cell in row] for row in rows]
        if not shown:
            return
        for row in shown:
            self.widths = [max(w, len(cell)) for w, cell in zip(self.widths, row, strict=True)]
        lines = [] if self.started else [self.header]
        self.started = True
        lines.extend(shown)
        self.count += len(shown)
        self.write("".join(self._line(cells) + "\n" for cells in lines))

    def _line(self, cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, self.widths, strict=True)).rstrip()


class StreamedJson:
    """One list field written item by item, then the fields that close the document."""

    def __init__(self, name: str, write: Callable[[str], None] = _write) -> None:
        self.write = write
        self.count = 0
        self.write("{\n  " + json.dumps(name) + ": [")

    def items(self, items: Iterable[Any]) -> None:
        for item in items:
            separator = ",\n" if self.count else "\n"
            self.write(separator + textwrap.indent(json.dumps(item, indent=2), "    "))
            self.count += 1

    def close(self, **fields: Any) -> None:
        """The end of the list and the closing fields (scalars)."""
        text = "\n  ]" if self.count else "]"
        for name, value in fields.items():
            text += ",\n  " + json.dumps(name) + ": " + json.dumps(value, indent=2)
        self.write(text + "\n}\n")
