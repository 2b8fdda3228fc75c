"""Disk and image tables. Refused disks are shown dimmed with the reason and cannot be chosen."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from app.engine import DiskRow, ImageRow
from bootmedia.progress import human_bytes, human_size


class DiskTable(DataTable[Text]):
    """Shows DiskRows; Enter on a row posts Chosen, or Refused with the reason."""

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
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.rows_by_key: dict[str, DiskRow] = {}

    def on_mount(self) -> None:
        self.add_column("Disk", key="name")
        self.add_column("Model", key="model")
        self.add_column("Serial", key="serial")
        self.add_column("Size", key="size")
        self.add_column("Bus", key="bus")
        self.add_column("Contents", key="info")

    def show(self, rows: list[DiskRow], fresh: frozenset[str] = frozenset()) -> None:
        """Replace the rows, keeping the cursor on the same disk. `fresh` disks just appeared."""
        current = self.current_row()
        self.clear()
        self.rows_by_key = {r.key: r for r in rows}
        for r in rows:
            style = "dim" if r.refusal else ("reverse bold" if r.key in fresh else "")
            info = f"REFUSED: {r.short_refusal}" if r.refusal else r.partitions_text()
            serial = r.disk.serial or "-"
            cells = (
                r.disk.name,
                r.title[:18],
                serial if len(serial) <= 12 else ".." + serial[-10:],
                human_size(r.disk.size),
                r.bus,
                info,
            )
            self.add_row(*(Text(c, style=style, no_wrap=True) for c in cells), key=r.key)
        if current is not None and current.key in self.rows_by_key:
            self.move_cursor(row=self.get_row_index(current.key))
        elif rows:
            usable = next((i for i, r in enumerate(rows) if not r.refusal), 0)
            self.move_cursor(row=usable)

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
        self.post_message(self.Highlighted(self.rows_by_key.get(event.row_key.value or "")))


class ImageTable(DataTable[str]):
    """Shows ImageRows; Enter posts Chosen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Choose", key_display="Enter")
    ]

    class Chosen(Message):
        def __init__(self, row: ImageRow) -> None:
            super().__init__()
            self.row = row

    class Highlighted(Message):
        def __init__(self, row: ImageRow | None) -> None:
            super().__init__()
            self.row = row

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self.rows_by_key: dict[str, ImageRow] = {}

    def on_mount(self) -> None:
        for label in ("Image", "Created", "Size", "Source disk", "Description"):
            self.add_column(label)

    def show(self, rows: list[ImageRow]) -> None:
        self.clear()
        self.rows_by_key = {r.key: r for r in rows}
        for r in rows:
            m = r.manifest
            self.add_row(
                m.name,
                str(m.created)[:16].replace("T", " "),
                human_bytes(m.stats.data_bytes),
                f"{m.source.model or '?'} {human_size(m.source.size)}",
                m.description or "-",
                key=r.key,
            )

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
        self.post_message(self.Highlighted(self.rows_by_key.get(event.row_key.value or "")))
