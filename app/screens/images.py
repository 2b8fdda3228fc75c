"""The Images screen: every image in every repository; info, delete (confirmed), verify."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from app import engine
from app.engine import ImageRow
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.screens.dialogs import AskText
from app.screens.pickers import image_details
from app.widgets.tables import ImageTable


class ImagesScreen(BaseScreen[None]):
    TITLE_TEXT = "Images"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("v", "verify", "Verify"),
        Binding("delete", "delete", "Delete", key_display="Del"),
        Binding("o", "open_repo", "Open repository"),
        Binding("f5", "refresh", "Refresh", key_display="F5"),
    ]
    DEFAULT_CSS = """
    ImagesScreen #images { height: 1fr; }
    ImagesScreen #details { height: 11; }
    """

    note = ""  # what the last action did, kept across the refresh that follows it

    def compose_body(self) -> ComposeResult:
        yield ImageTable(id="images")
        yield Static("", id="details", classes="pane")

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.status("Looking for repositories...")
        self.run_blocking("images", self.load)

    def load(self) -> list[ImageRow]:
        return engine.list_images(engine.find_repositories(self.session))

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "deleted":
            self.note = message.value
            self.action_refresh()
            return
        table = self.query_one(ImageTable)
        table.show(message.value)
        table.focus()
        self.query_one("#details", Static).update(image_details(table.current_row()))
        self.status(f"{len(message.value)} image(s). {self.note}")
        self.note = ""

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_image_table_highlighted(self, message: ImageTable.Highlighted) -> None:
        self.query_one("#details", Static).update(image_details(message.row))

    def on_image_table_chosen(self, message: ImageTable.Chosen) -> None:
        self.query_one("#details", Static).update(image_details(message.row))

    def action_verify(self) -> None:
        row = self.query_one(ImageTable).current_row()
        if row is None:
            return
        from app.flows import run_job
        from app.jobs import plan_verify

        async def flow(app: object) -> None:
            await run_job(self.bm, plan_verify(row.repo, row))

        self.bm.start_flow(flow)

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_delete(self) -> None:
        row = self.query_one(ImageTable).current_row()
        if row is None:
            return
        command = engine.delete_command(row)
        typed = await self.app.push_screen_wait(
            AskText(
                f"Delete image {row.name} from {row.repo}? Type its name to confirm:",
                note=f"Command line: {command}",
            )
        )
        if typed != row.name:
            self.status("Not deleted: the name did not match." if typed else "Not deleted.")
            return
        self.status(f"Deleting {row.name}: {command}")
        self.run_blocking("deleted", self.delete, row)

    @staticmethod
    def delete(row: ImageRow) -> str:
        return f"{engine.delete_image(row)} (same as: {engine.delete_command(row)})"

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_open_repo(self) -> None:
        from pathlib import Path

        path = await self.app.push_screen_wait(AskText("Path of a repository (a directory):"))
        if path:
            self.session.add_repo(Path(path).expanduser())
            self.action_refresh()
