"""The Images screen: every image in every repository; info, delete (confirmed), verify."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from app import engine
from app.engine import ImageRow
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.screens.dialogs import AskText
from app.screens.pickers import DETAILS_CSS, details_room, image_details
from app.widgets.tables import ImageTable
from bootmedia.net.mount import label as repo_label
from bootmedia.text import plural, printable

if TYPE_CHECKING:
    from app.app import BootmediaApp


class OpenableImageTable(ImageTable):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", key_display="Enter")
    ]


class ImagesScreen(BaseScreen[None]):
    TITLE_TEXT = "Images"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("v", "verify", "Verify"),
        Binding("delete", "delete", "Delete", key_display="Del"),
        Binding("o", "open_repo", "Open repo"),
        Binding("f5", "refresh", "Refresh", key_display="F5"),
    ]
    DEFAULT_CSS = DETAILS_CSS
    CHROME_ROWS = 10  # title, the table's minimum (5), status, footer, the pane's border (2)

    note = ""  # what the last action did, kept across the refresh that follows it

    def compose_body(self) -> ComposeResult:
        yield OpenableImageTable(id="images")
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
        self.show_details(table.current_row())
        self.status(f"{plural(len(message.value), 'image')}. {self.note}")
        self.note = ""

    def show_details(self, row: ImageRow | None) -> None:
        room, width = details_room(self, self.CHROME_ROWS)
        self.query_one("#details", Static).update(image_details(row, room, width))

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_image_table_highlighted(self, message: ImageTable.Highlighted) -> None:
        self.show_details(message.row)

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def on_image_table_chosen(self, message: ImageTable.Chosen) -> None:
        """Enter opens the image: all of it on one screen, and what can be done with it."""
        row = message.row
        action = await self.app.push_screen_wait(ImageScreen(row))
        if action == "restore":
            from app.flows.restore import restore_flow

            async def flow(app: BootmediaApp) -> None:
                await restore_flow(app, image=row)

            self.bm.start_flow(flow)
        elif action == "verify":
            self.action_verify()
        elif action == "delete":
            self.action_delete()

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
                f"Delete image {row.name} from {where(row)}? Type its name to confirm:",
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

        path = await self.app.push_screen_wait(
            AskText("Path of a repository (a directory):", self.session.recall("repo_path"))
        )
        if path:
            self.session.remember("repo_path", path)
            self.session.add_repo(Path(path).expanduser())
            self.action_refresh()


class ImageScreen(BaseScreen[str]):
    """One image, all of it: what it was taken from, what it needs, every partition, where it
    is; r restores it, v verifies it, Del deletes it (each asks or confirms as usual)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("r", "pick('restore')", "Restore it"),
        Binding("v", "pick('verify')", "Verify"),
        Binding("delete", "pick('delete')", "Delete", key_display="Del"),
    ]
    DEFAULT_CSS = """
    ImageScreen #image { height: 1fr; border: solid $primary; padding: 0 1; }
    ImageScreen #image:focus { border: solid $accent; }
    """

    def __init__(self, row: ImageRow) -> None:
        super().__init__(f"Image {printable(row.name, 40)}")
        self.row = row

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="image"):
            yield Static(image_details(self.row, room=10_000, width=self.app.size.width - 4))
            command = shlex.join(["bootmedia", "info", str(self.row.repo), self.row.name])
            said = f"\nCommand line:\n{printable(command, 500)}"
            if repo_label(self.row.repo) != str(self.row.repo):
                said += f"\n({where(self.row)})"  # the path above is where the share is
            yield Static(said, classes="hint")

    def on_mount(self) -> None:
        self.query_one("#image").focus()
        self.status("r restores this image, v verifies it, Del deletes it, Esc goes back.")

    def action_pick(self, action: str) -> None:
        self.dismiss(action)


def where(row: ImageRow) -> str:
    """The repository as the technician named it: a network share by its URL (and where it
    is mounted, which the CLI commands take), a local one by its path."""
    url = repo_label(row.repo)
    if url == str(row.repo):
        return printable(url, 300)
    return f"{printable(url, 300)}, mounted at {row.repo}"
