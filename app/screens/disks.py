"""The Disks screen: a live table that follows hotplug; a new disk is highlighted for a while."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static
from textual.worker import get_current_worker

from app import engine
from app.engine import DiskRow
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.screens.pickers import DETAILS_CSS, details_room, disk_details
from app.widgets.tables import DiskTable
from bootmedia.text import plural

FRESH_SECONDS = 6.0


class DisksScreen(BaseScreen[None]):
    TITLE_TEXT = "Disks"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("f5", "refresh", "Refresh", key_display="F5"),
        Binding("a", "add_lab_disk", "Plug in a lab disk"),
    ]
    DEFAULT_CSS = DETAILS_CSS
    CHROME_ROWS = 12  # title, heading (2), the table's minimum (5), status, footer, border (2)

    def __init__(self) -> None:
        super().__init__()
        self.fresh: dict[str, float] = {}  # disk path -> when it appeared
        self.rows: list[DiskRow] = []
        # What just changed, said on the status line for FRESH_SECONDS (a toast drew over the
        # details pane's border and the status line, wrapped in a narrow column).
        self.news: dict[str, float] = {}

    def compose_body(self) -> ComposeResult:
        yield Static("Plug a disk in and watch it appear here.", classes="heading")
        yield DiskTable(id="disks")
        yield Static("", id="details", classes="pane")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "add_lab_disk":
            return self.session.demo
        return True

    def on_mount(self) -> None:
        self.status("Looking for disks...")
        self.action_refresh()
        self.watch_hotplug()
        self.set_interval(1.0, self.expire_fresh)

    def action_refresh(self) -> None:
        self.run_blocking("disks", engine.list_disks, self.session)

    @work(thread=True, exit_on_error=False, group="hotplug")
    def watch_hotplug(self) -> None:
        """Wait for hotplug events in this thread; each batch becomes one message."""
        worker = get_current_worker()
        monitor = engine.disk_monitor(self.session)
        try:
            while not worker.is_cancelled:
                events = monitor.poll(timeout=0.5)
                if events:
                    self.post_message(Loaded("hotplug", events))
        finally:
            monitor.close()

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "hotplug":
            self.mark_fresh(message.value)
            self.action_refresh()
        elif message.what == "disks":
            self.rows = message.value
            self.show_rows()
            self.say_count()
        elif message.what == "added":
            self.status(f"Plugged in {message.value.name}.")

    def mark_fresh(self, events: list[Any]) -> None:
        now = time.monotonic()
        for event in events:
            if event.action == "add" and event.disk is not None:
                self.fresh[event.disk.path] = now
                self.news[f"New disk: {event.disk.label()}."] = now
            elif event.action == "remove":
                self.news[f"Disk removed: {event.name}."] = now

    def say_count(self) -> None:
        count = f"{plural(len(self.rows), 'disk')}. Watching for disks being plugged in."
        self.status(" ".join([*self.news, count]))

    def expire_fresh(self) -> None:
        now = time.monotonic()
        stale = [p for p, t in self.fresh.items() if now - t > FRESH_SECONDS]
        for path in stale:
            del self.fresh[path]
        if stale:
            self.show_rows()
        old = [n for n, t in self.news.items() if now - t > FRESH_SECONDS]
        for news in old:
            del self.news[news]
        if old:
            self.say_count()

    def show_rows(self) -> None:
        table = self.query_one(DiskTable)
        table.show(self.rows, frozenset(self.fresh))
        table.focus()
        self.show_details(table.current_row())

    def show_details(self, row: DiskRow | None) -> None:
        room, width = details_room(self, self.CHROME_ROWS)
        self.query_one("#details", Static).update(disk_details(row, room, width))

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_disk_table_highlighted(self, message: DiskTable.Highlighted) -> None:
        self.show_details(message.row)

    def on_disk_table_chosen(self, message: DiskTable.Chosen) -> None:
        self.show_details(message.row)

    def on_disk_table_refused(self, message: DiskTable.Refused) -> None:
        self.show_details(message.row)

    def action_add_lab_disk(self) -> None:
        if self.session.lab is not None:
            self.run_blocking("added", self.session.lab.add_disk)
