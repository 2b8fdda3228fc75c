"""Wizard steps that pick something: a disk, an image, a repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from app import engine
from app.engine import DiskRow, ImageRow
from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from app.screens.dialogs import AskText
from app.widgets.tables import DiskTable, ImageTable
from app.wrap import fit_lines
from bootmedia.disks.model import Disk
from bootmedia.net.mount import label as repo_label
from bootmedia.progress import human_bytes, human_size
from bootmedia.text import plural, printable

Choice = tuple[str, str, str | None]  # value, description, why it is unavailable


# The details pane under a disk or image table is as tall as what it shows, up to what the
# screen leaves once the table has its header and a few rows; its lines are laid out for the
# pane's width, so nothing wraps into the next line or falls off the bottom.
DETAILS_CSS = """
#details { height: auto; }
DataTable { min-height: 5; }
"""
PANE_CHROME = 4  # the pane's border and padding, in columns (and 2 rows of border)


def fit_details(head: list[Text], parts: list[str], room: int, width: int) -> Text:
    """head lines, then one line per partition; where they do not fit in `room` lines, the
    partitions go two to a line, and what still does not fit is counted ("and 3 more")."""

    def height(line: Text | str) -> int:
        n = len(line.plain if isinstance(line, Text) else line)
        return max(1, -(-n // max(1, width)))

    used = sum(height(h) for h in head)
    lines: list[Text | str] = list(head)
    if used + len(parts) > room and len(parts) > 1:
        half = (width - 2) // 2
        cells = [(p if len(p) <= half else p[: half - 2] + "..").ljust(half) for p in parts]
        pairs = ["  ".join(cells[i : i + 2]).rstrip() for i in range(0, len(cells), 2)]
        left = room - used
        if len(pairs) > left:
            shown = max(0, left - 1)
            more = len(parts) - 2 * shown
            pairs = [
                *pairs[:shown],
                f"  and {more} more {'partition' if more == 1 else 'partitions'}",
            ]
        lines += pairs
    else:
        lines += parts
    return Text("\n").join(line if isinstance(line, Text) else Text(line) for line in lines)


def details_room(screen: Any, chrome_rows: int) -> tuple[int, int]:
    """(lines, columns) the details pane may use on `screen`: chrome_rows are the screen's
    other rows (title, heading, the table's minimum, status, footer, the pane's border)."""
    size = screen.app.size
    return max(3, size.height - chrome_rows), max(20, size.width - PANE_CHROME)


def disk_details(row: DiskRow | None, room: int = 100, width: int = 76) -> Text:
    if row is None:
        return Text("")
    d = row.disk
    head = [Text(printable(row.label(), 200), "bold")]
    if row.refusal:
        head.append(Text(f"Refused: {printable(row.short_refusal, 200)}", "bold red"))
    if d.incomplete_restore:
        head.append(Text("Holds an incomplete restore (cancelled or failed)", "bold yellow"))
    parts = []
    for p in d.partitions:
        mounts = printable(",".join(p.mountpoints), 80)
        fstype = printable(p.fstype, 8) or "no fs"  # no signature ("?" read as an error)
        label = printable(p.label, 36)
        parts.append(
            f"  {p.name:<10} {human_size(p.size):>9}  {fstype:<6} {label} {mounts}".rstrip()
        )
    if not d.partitions:
        parts.append("  no partitions" + (f" ({d.fstype} on the whole disk)" if d.fstype else ""))
    by_id = [Text(f"  {printable(b, 200)}", "dim") for b in d.by_id[:2]]
    shown = fit_details(head, parts, room - sum(1 for _ in by_id), width)
    return Text("\n").join([shown, *by_id]) if by_id else shown


class DiskPickScreen(BaseScreen[DiskRow]):
    """Pick a disk. With for_write, refused disks are dimmed and cannot be chosen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "choose", "Choose", key_display="Enter"),
        Binding("f5", "refresh", "Refresh", key_display="F5"),
    ]
    DEFAULT_CSS = DETAILS_CSS
    CHROME_ROWS = 12  # title, heading (2), the table's minimum (5), status, footer, border (2)

    def __init__(
        self,
        title: str,
        *,
        for_write: bool = True,
        question: str = "",
        check: Callable[[Disk], str | None] | None = None,
    ) -> None:
        super().__init__(title)
        self.for_write = for_write
        self.question = question or "Which disk?"
        self.check = check  # the step's own refusal (too small, mounted read-write...)

    def compose_body(self) -> ComposeResult:
        yield Static(self.question, classes="heading")
        yield DiskTable(id="disks")
        yield Static("", id="details", classes="pane")

    def on_mount(self) -> None:
        self.status("Looking for disks...")
        self.action_refresh()

    def action_refresh(self) -> None:
        self.run_blocking(
            "disks", engine.list_disks, self.session, for_write=self.for_write, check=self.check
        )

    def on_loaded(self, message: Loaded) -> None:
        rows: list[DiskRow] = message.value
        table = self.query_one(DiskTable)
        table.show(rows)
        table.focus()
        usable = sum(1 for r in rows if not r.refusal)
        self.status(
            f"{plural(len(rows), 'disk')}, {usable} can be chosen." if rows else "No disks found."
        )
        self.show_details(table.current_row())

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_disk_table_highlighted(self, message: DiskTable.Highlighted) -> None:
        self.show_details(message.row)

    def on_disk_table_chosen(self, message: DiskTable.Chosen) -> None:
        self.dismiss(message.row)

    def show_details(self, row: DiskRow | None) -> None:
        room, width = details_room(self, self.CHROME_ROWS)
        self.query_one("#details", Static).update(disk_details(row, room, width))

    def on_disk_table_refused(self, message: DiskTable.Refused) -> None:
        self.status(f"{message.row.disk.name} cannot be chosen: {message.row.refusal}", error=True)

    def action_choose(self) -> None:
        self.query_one(DiskTable).action_select_cursor()


def image_details(row: ImageRow | None, room: int = 100, width: int = 76) -> Text:
    if row is None:
        return Text("")
    m = row.manifest
    description = printable(m.description, 200)
    source = " ".join(
        x for x in (printable(m.source.model, 64), printable(m.source.serial, 64)) if x
    )
    head = [
        Text.assemble((printable(m.name), "bold"), f"  {description}" if description else ""),
        Text(
            f"Created {printable(str(m.created)[:16].replace('T', ' '))} from a disk of "
            f"{human_size(m.source.size)}"
        ),
        Text(f"Source {source or '?'}"),  # its own line: a long model+serial wraps alone
        Text(
            f"Needs a disk of {human_size(m.required_size)}; data "
            f"{human_bytes(m.stats.data_bytes)}, stored {human_bytes(m.stats.stored_bytes)}"
        ),
        Text(f"Repository {printable(repo_label(row.repo), 300)}"),
    ]
    parts = []
    for a in m.partitions:
        used = f", {human_bytes(a.used)} used" if a.used is not None else ""
        fstype = printable(a.fstype, 8) or "-"
        parts.append(
            f"  {a.name:<8} {fstype:<6} {printable(a.label, 36):<12} {human_size(a.size)}{used}"
        )
    return fit_details(head, parts, room, width)


class ImagePickScreen(BaseScreen[ImageRow]):
    """Pick an image from every repository found. o opens another repository by path."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "choose", "Choose", key_display="Enter"),
        # Short labels: with Enter, Esc and ^Q the footer fits in 80 columns.
        Binding("o", "open_repo", "Open repo"),
        Binding("n", "network", "Net share"),
        Binding("j", "join", "Join multicast"),
    ]
    DEFAULT_CSS = DETAILS_CSS
    CHROME_ROWS = 12

    def __init__(self, title: str, question: str = "Which image?", join: bool = False) -> None:
        super().__init__(title)
        self.question = question
        self.join = join  # offer "Join multicast" (restore only)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.join if action == "join" else True

    def compose_body(self) -> ComposeResult:
        yield Static(self.question, classes="heading")
        yield ImageTable(id="images")
        yield Static("", id="details", classes="pane")

    def on_mount(self) -> None:
        self.refresh_images()

    def refresh_images(self) -> None:
        self.status("Looking for repositories...")
        self.run_blocking("images", self.load)

    def load(self) -> list[ImageRow]:
        return engine.list_images(engine.find_repositories(self.session))

    def on_loaded(self, message: Loaded) -> None:
        rows: list[ImageRow] = message.value
        table = self.query_one(ImageTable)
        table.show(rows)
        table.focus()
        self.status(
            f"{plural(len(rows), 'image')}."
            if rows
            else "No images found. Press o to open a repository."
        )
        self.show_details(table.current_row())

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_image_table_highlighted(self, message: ImageTable.Highlighted) -> None:
        self.show_details(message.row)

    def on_image_table_chosen(self, message: ImageTable.Chosen) -> None:
        self.dismiss(message.row)

    def show_details(self, row: ImageRow | None) -> None:
        room, width = details_room(self, self.CHROME_ROWS)
        self.query_one("#details", Static).update(image_details(row, room, width))

    def action_choose(self) -> None:
        self.query_one(ImageTable).action_select_cursor()

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_open_repo(self) -> None:
        path = await self.app.push_screen_wait(
            AskText("Path of a repository (a directory):", self.session.recall("repo_path"))
        )
        if path:
            self.session.remember("repo_path", path)
            self.session.add_repo(Path(path).expanduser())
            self.refresh_images()

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_network(self) -> None:
        from app.screens.network import NetworkShareScreen

        if await self.app.push_screen_wait(NetworkShareScreen()):
            self.refresh_images()

    def action_join(self) -> None:
        """Restore from a multicast session instead: the sender picks the image."""
        from app.flows.receive import receive_flow

        self.dismiss(None)
        self.bm.start_flow(receive_flow)


class ChoiceList(OptionList):
    """An OptionList whose Enter is in the footer ("Enter Choose"), as on the table pickers:
    OptionList's own Enter binding is hidden, and shadowed the screen's."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Choose", key_display="Enter"),
    ]


class RepoPickScreen(BaseScreen[Path]):
    """Pick the repository a capture goes into; n makes a new one at a typed path."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("n", "new_repo", "New / other path"),
        Binding("s", "network", "Network share"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Where should the image go?", classes="heading")
        yield ChoiceList(id="repos")

    def on_mount(self) -> None:
        self.status("Looking for repositories...")
        self.run_blocking("repos", engine.find_repositories, self.session)

    def on_loaded(self, message: Loaded) -> None:
        repos: list[Path] = message.value
        menu = self.query_one(OptionList)
        menu.clear_options()
        menu.add_options([Option(repo_label(p), id=str(p)) for p in repos])
        if repos:
            menu.highlighted = 0
        menu.focus()
        found = "1 repository" if len(repos) == 1 else f"{len(repos)} repositories"
        self.status(f"{found}. Press n for another path.")

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(Path(event.option.id or ""))

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_new_repo(self) -> None:
        path = await self.app.push_screen_wait(
            AskText(
                "Path of the repository (created if it does not exist):",
                self.session.recall("repo_path"),
            )
        )
        if path:
            self.session.remember("repo_path", path)
            self.dismiss(Path(path).expanduser())

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_network(self) -> None:
        from app.screens.network import NetworkShareScreen

        path = await self.app.push_screen_wait(NetworkShareScreen())
        if path:
            self.dismiss(path)


class ChoicePickScreen(BaseScreen[str]):
    """Pick one of a few named choices (a wipe method, a layout). The choices are loaded by
    `load` in a thread: (value, description, reason it is unavailable or None). Unavailable
    choices are shown with the reason and cannot be picked."""

    def __init__(self, title: str, question: str, load: Callable[[], list[Choice]]) -> None:
        super().__init__(title)
        self.question = question
        self.load = load

    def compose_body(self) -> ComposeResult:
        yield Static(self.question, classes="heading")
        yield ChoiceList(id="choices")

    def on_mount(self) -> None:
        self.status("Asking the disk what it supports...")
        self.run_blocking("choices", self.load)

    def on_loaded(self, message: Loaded) -> None:
        choices: list[Choice] = message.value
        menu = self.query_one(OptionList)
        menu.clear_options()
        # The description wraps under itself, between phrases (a lone "MiB" at the left
        # margin read as a choice of its own).
        width = max(40, self.app.size.width - 6) - 18
        for value, text, refusal in choices:
            said = fit_lines([text] + ([f"not available: {refusal}"] if refusal else []), width)
            prompt = "\n".join(
                f"{value if i == 0 else '':<17} {line}" for i, line in enumerate(said)
            )
            menu.add_option(Option(escape(prompt), id=value, disabled=refusal is not None))
        first = next((i for i, c in enumerate(choices) if c[2] is None), None)
        if first is not None:
            menu.highlighted = first
        menu.focus()
        usable = sum(1 for c in choices if c[2] is None)
        self.status(f"{usable} of {len(choices)} can be used here. Enter chooses.")

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id or "")


class IsoPickScreen(BaseScreen[Path]):
    """Pick the live ISO for Make stick; n types another path."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("n", "other_path", "Other path"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Which live system (a bootmedia ISO from build_iso.sh)?", classes="heading")
        yield ChoiceList(id="isos")

    def on_mount(self) -> None:
        self.status("Looking for ISO files...")
        self.run_blocking("isos", engine.find_isos, self.session)

    def on_loaded(self, message: Loaded) -> None:
        isos: list[Path] = message.value
        menu = self.query_one(OptionList)
        menu.clear_options()
        for path in isos:
            try:
                size = human_size(path.stat().st_size)
            except OSError:
                continue
            menu.add_option(Option(Text(f"{path}  ({size})"), id=str(path)))
        if menu.option_count:
            menu.highlighted = 0
        menu.focus()
        found = plural(menu.option_count, "ISO file") if menu.option_count else "No ISO file found"
        self.status(f"{found}. Press n to type a path.")

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(Path(event.option.id or ""))

    @work(exclusive=True, group="ask", exit_on_error=False)
    async def action_other_path(self) -> None:
        path = await self.app.push_screen_wait(AskText("Path of the ISO file:"))
        if path:
            self.dismiss(Path(path).expanduser())
