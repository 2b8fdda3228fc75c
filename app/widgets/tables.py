"""Disk and image tables. Refused disks are shown dimmed with the reason and cannot be chosen."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from app.engine import DiskRow, ImageRow
from bootmedia.net.mount import label as repo_label
from bootmedia.progress import human_bytes, human_size
from bootmedia.text import printable

MARK = ">"  # the selected row's marker: ASCII, so it reads in monochrome, over serial, in a log

TABLE_CSS = """
MarkedTable > .datatable--cursor, MarkedTable:focus > .datatable--cursor {
    text-style: reverse bold;
}
"""


class MarkedTable(DataTable[Text]):
    """A row table whose selected row is marked three ways: colour, reverse video and a MARK
    in the first column (colour alone vanishes in monochrome, over serial and in a capture)."""

    DEFAULT_CSS = TABLE_CSS

    MARK_COLUMN = "name"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.marked: str | None = None  # row key that carries the MARK
        self.first: dict[str, Text] = {}  # row key -> its first cell, without the mark

    def marked_cell(self, key: str, on: bool) -> Text:
        cell = self.first[key]
        return Text.assemble((MARK if on else " ", "bold"), " ", cell)

    def set_mark(self, key: str | None) -> None:
        if key == self.marked:
            return
        for row, on in ((self.marked, False), (key, True)):
            if row is not None and row in self.rows and row in self.first:
                self.update_cell(row, self.MARK_COLUMN, self.marked_cell(row, on))
        self.marked = key

    def mark_cursor(self) -> None:
        if self.row_count and 0 <= self.cursor_row < self.row_count:
            key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
            self.marked = None if key != self.marked else self.marked
            self.set_mark(key)


class DiskTable(MarkedTable):
    """Shows DiskRows; Enter on a row posts Chosen, or Refused with the reason. The columns fit
    the terminal: Model and Contents get whatever width is left (never a fixed cut)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Choose", key_display="Enter")
    ]

    class Chosen(Message):
        def __init__(self, row: DiskRow) -> None:
            super().__init__()
            self.row = row

    class Refused(Message):
        def __init__(self, row: DiskRow) -> None:
            super().__init__()
            self.row = row

    class Highlighted(Message):
        def __init__(self, row: DiskRow | None) -> None:
            super().__init__()
            self.row = row

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows_by_key: dict[str, DiskRow] = {}
        self.fresh: frozenset[str] = frozenset()

    def on_resize(self) -> None:
        if self.rows_by_key:
            self.show(list(self.rows_by_key.values()), self.fresh)

    @staticmethod
    def cells(r: DiskRow) -> dict[str, str]:
        return {
            "name": r.disk.name,
            "model": r.title,
            "serial": printable(r.serial, 40) or "-",
            "size": human_size(r.disk.size),
            "bus": r.bus,
            "info": f"REFUSED: {r.short_refusal}" if r.refusal else r.partitions_text(),
        }

    def widths(self, rows: list[dict[str, str]]) -> dict[str, int]:
        """Column widths for the table's width: each fixed column as wide as its widest cell;
        Model and Contents share the rest; Bus only where there is room (the details pane
        below always shows it)."""
        total = (self.size.width or self.app.size.width) - 1
        pad = 2 * self.cell_padding
        want = {k: max([len(HEADINGS[k]), *(len(r[k]) for r in rows)]) for k in HEADINGS}
        want["serial"] = min(want["serial"], 20)
        cols = ["name", "serial", "size", "bus"]
        want["name"] += 2  # the mark
        fixed = sum(want[k] + pad for k in cols)
        if total - fixed - 2 * pad < want["model"] + want["info"]:
            cols.remove("bus")
            fixed -= want["bus"] + pad
        room = max(20, total - fixed - 2 * pad)
        # Model (what tells disks apart) whole where it can be, Contents at least 24 wide
        # ("REFUSED: ...", "INCOMPLETE RESTORE"); the details pane has all of either.
        model = (
            want["model"]
            if want["model"] + want["info"] <= room
            else max(min(want["model"], 12), min(want["model"], room - 24))
        )
        out = {k: want[k] for k in cols}
        out["model"] = model
        out["info"] = max(8, room - model)
        return out

    def show(self, rows: list[DiskRow], fresh: frozenset[str] = frozenset()) -> None:
        """Replace the rows, keeping the cursor on the same disk. `fresh` disks just appeared."""
        current = self.current_row()
        self.fresh = fresh
        self.clear(columns=True)
        self.marked = None
        texts = [self.cells(r) for r in rows]
        widths = self.widths(texts)
        self.first = {}
        for key in ("name", "model", "serial", "size", "bus", "info"):
            if key in widths:
                self.add_column(HEADINGS[key], key=key, width=widths[key])
        self.rows_by_key = {r.key: r for r in rows}
        for r, cells in zip(rows, texts, strict=True):
            style = "dim" if r.refusal else ("reverse bold" if r.key in fresh else "")
            serial = cells["serial"]
            if len(serial) > widths["serial"]:
                serial = ".." + serial[-(widths["serial"] - 2) :]  # the end is what is typed
            cells["serial"] = serial
            for k in ("model", "info"):
                if k in widths:
                    cells[k] = cut(cells[k], widths[k])
            row = [
                Text(cells[k], style=style, no_wrap=True, overflow="crop")
                for k in ("name", "model", "serial", "size", "bus", "info")
                if k in widths
            ]
            self.first[r.key] = row[0]
            row[0] = self.marked_cell(r.key, False)
            self.add_row(*row, key=r.key)
        if current is not None and current.key in self.rows_by_key:
            self.move_cursor(row=self.get_row_index(current.key))
        elif rows:
            usable = next((i for i, r in enumerate(rows) if not r.refusal), 0)
            self.move_cursor(row=usable)
        self.mark_cursor()

    def current_row(self) -> DiskRow | None:
        if not self.rows_by_key or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        return self.rows_by_key.get(key or "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = self.rows_by_key.get(event.row_key.value or "")
        if row is None:
            return
        self.post_message(self.Refused(row) if row.refusal else self.Chosen(row))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.set_mark(event.row_key.value)
        self.post_message(self.Highlighted(self.rows_by_key.get(event.row_key.value or "")))


HEADINGS = {
    "name": "Disk",
    "model": "Model",
    "serial": "Serial",
    "size": "Size",
    "bus": "Bus",
    "info": "Contents",
}


class ImageTable(MarkedTable):
    """Shows ImageRows; Enter posts Chosen. Two repositories may hold the same name: the
    Repository column tells the rows apart. The columns are sized to their cells every time
    the rows change (a second repository's longer names and labels are never cut) and the
    Description gets what is left."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Choose", key_display="Enter")
    ]
    COLUMNS = ("Image", "Repository", "Created", "Size", "Description")
    MARK_COLUMN = "image"

    class Chosen(Message):
        def __init__(self, row: ImageRow) -> None:
            super().__init__()
            self.row = row

    class Highlighted(Message):
        def __init__(self, row: ImageRow | None) -> None:
            super().__init__()
            self.row = row

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows_by_key: dict[str, ImageRow] = {}

    def on_resize(self) -> None:
        if self.rows_by_key:
            self.show(list(self.rows_by_key.values()))

    @staticmethod
    def cells(r: ImageRow) -> dict[str, str]:
        m = r.manifest
        return {
            "image": m.name,
            "repository": short_path(r.repo),
            "created": printable(str(m.created)[:16].replace("T", " ")),
            "size": human_bytes(m.stats.data_bytes),
            "description": printable(m.description, 200) or "-",
        }

    def widths(self, rows: list[dict[str, str]]) -> dict[str, int]:
        """Every column as wide as its widest cell, the Description the rest. Where that does
        not fit, the Repository gives way first (its end is kept: the details pane has all of
        it), then the time of day; the image name, which is what is typed, last of all."""
        total = (self.size.width or self.app.size.width) - 1
        pad = 2 * self.cell_padding
        want = {k.lower(): len(k) for k in self.COLUMNS}
        for r in rows:
            for k, v in r.items():
                want[k] = max(want[k], len(v))
        want["image"] += 2  # the mark
        desc_min = len("Description")

        def room() -> int:
            fixed = sum(want[k] + pad for k in want if k != "description")
            return total - fixed - pad

        if room() < desc_min:
            want["repository"] = max(12, want["repository"] - (desc_min - room()))
        if room() < desc_min:
            want["created"] = 10  # the date
        want["description"] = max(8, room())
        return want

    def show(self, rows: list[ImageRow]) -> None:
        current = self.current_row()
        self.clear(columns=True)
        self.marked = None
        self.first = {}
        texts = [self.cells(r) for r in rows]
        widths = self.widths(texts)
        for label in self.COLUMNS:
            self.add_column(label, key=label.lower(), width=widths[label.lower()])
        self.rows_by_key = {r.key: r for r in rows}
        for r, cells in zip(rows, texts, strict=True):
            repo = cells["repository"]
            if len(repo) > widths["repository"]:
                cells["repository"] = ".." + repo[-(widths["repository"] - 2) :]
            cells["description"] = cut(cells["description"], widths["description"])
            row = [
                Text(cells[label.lower()], no_wrap=True, overflow="crop") for label in self.COLUMNS
            ]
            self.first[r.key] = row[0]
            row[0] = self.marked_cell(r.key, False)
            self.add_row(*row, key=r.key)
        if current is not None and current.key in self.rows_by_key:
            self.move_cursor(row=self.get_row_index(current.key))
        self.mark_cursor()

    def current_row(self) -> ImageRow | None:
        if not self.rows_by_key or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        return self.rows_by_key.get(key or "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = self.rows_by_key.get(event.row_key.value or "")
        if row is not None:
            self.post_message(self.Chosen(row))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.set_mark(event.row_key.value)
        self.post_message(self.Highlighted(self.rows_by_key.get(event.row_key.value or "")))


def short_path(path: Path, keep: int = 2) -> str:
    """The last `keep` components of a repository path (the details pane has all of it); a
    network share shows as its URL without the scheme (bootmedia.net), not its mount point."""
    url = repo_label(path)
    if url != str(path):
        return url.split("://", 1)[-1]
    parts = path.parts
    return str(path) if len(parts) <= keep + 1 else str(Path("...", *parts[-keep:]))


def cut(text: str, width: int) -> str:
    """text in `width` cells: a cut one ends in "..." ("ext4/sample-roo" read as a label of
    its own; the console font has no U+2026). The details pane below has all of it."""
    return text if len(text) <= width else text[: max(1, width - 3)].rstrip() + "..."
