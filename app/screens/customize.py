"""Restore wizard step: make this machine its own (name, machine-id, SSH keys, UEFI entry), with
a live preview of the name this machine gets and whether each OS on the image accepts it."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from app.engine import ImageRow
from app.screens.base import BaseScreen
from app.widgets.toggles import Toggle
from bootmedia.customize import Machine, read_machine
from bootmedia.customize.efi import booted_by_uefi
from bootmedia.customize.names import (
    counter_dir_for,
    make_rule,
    name_problem,
    peek_counter,
    render,
)
from bootmedia.customize.plan import os_kinds_of
from bootmedia.errors import BootmediaError


def counter_dir(image: ImageRow, pattern: str) -> str:
    return str(counter_dir_for(pattern, image.repo))


def preview(image: ImageRow, fields: dict[str, Any], machine: Machine) -> list[str]:
    """What the technician sees under the form: this machine's name and each OS's verdict."""
    fstypes = {a.fstype for a in image.manifest.areas if a.fstype}
    kinds = os_kinds_of(fstypes)
    who = f"This machine: serial {machine.serial or '(none)'}, MAC {machine.mac or '(none)'}"
    lines = [who]
    hostname, csv = fields["hostname"].strip(), fields["names_csv"].strip()
    if hostname or csv:
        try:
            rule = make_rule(
                hostname or None,
                csv or None,
                counter_dir=counter_dir(image, hostname) if "{n" in hostname else None,
            )
            assert rule is not None
            n = peek_counter(rule.counter_dir, machine) if rule.uses_counter else None
            name = render(rule, machine, n)
        except BootmediaError as exc:
            return [*lines, f"Name: cannot be made: {exc}"]
        lines.append(f"Name: '{name}'" + (f" ({{n}} = {n}, the next free number)" if n else ""))
        for kind in kinds:
            problem = name_problem(name, kind)
            lines.append(f"  {kind.capitalize()}: " + (f"REFUSED: {problem}" if problem else "OK"))
        if not kinds:
            lines.append("  The image holds no Linux or Windows system to rename.")
    else:
        lines.append("Name: kept as in the image")
    if fields["reset_machine_id"] and "linux" in kinds:
        lines.append("Linux: /etc/machine-id emptied (a new one at first boot)")
    if fields["new_ssh_keys"]:
        lines.append("Linux: SSH host keys removed (new ones at first boot)")
    if fields["boot_entry"]:
        lines.append("UEFI: a boot entry for the disk's loader, first in BootOrder")
    if fields["add_fallback"]:
        lines.append("UEFI: \\EFI\\BOOT\\BOOTX64.EFI added where missing")
    lines.append("Every change is read back after the restore.")
    return lines


class CustomizeOptionsScreen(BaseScreen[dict[str, Any]]):
    """Hostname or pattern, a names CSV, identity toggles; the preview follows every key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("enter", "next", "Next", key_display="Enter"),
        Binding("ctrl+n", "next", "Next", show=False),
        Binding("down", "app.focus_next", "Move", show=False),
        Binding("up", "app.focus_previous", "Move", show=False),
    ]
    DEFAULT_CSS = """
    CustomizeOptionsScreen Input { width: 60; }
    CustomizeOptionsScreen #preview { margin: 1 0 0 0; }
    """

    def __init__(
        self,
        title: str,
        image: ImageRow,
        defaults: dict[str, Any] | None = None,
        machine: Machine | None = None,
    ) -> None:
        super().__init__(title)
        self.image = image
        self.defaults = defaults or {}
        self.machine = machine or read_machine()

    def compose_body(self) -> ComposeResult:
        d = self.defaults
        with Vertical(classes="pane", id="customize"):
            yield Static("Name or pattern ({serial} {mac} {asset} {n}), empty keeps it:")
            yield Input(d.get("hostname", ""), id="hostname")
            yield Static("Or a CSV mapping serial/MAC to names (path):")
            yield Input(d.get("names_csv", ""), id="names_csv")
            yield Toggle("New machine-id (Linux)", d.get("reset_machine_id", True), id="mid")
            yield Toggle("New SSH host keys (Linux)", d.get("new_ssh_keys", False), id="ssh")
            uefi = booted_by_uefi()  # the entry can only be written from a UEFI boot
            yield Toggle("Create the UEFI boot entry", d.get("boot_entry", uefi), id="entry")
            yield Toggle("Add \\EFI\\BOOT\\BOOTX64.EFI", d.get("add_fallback", False), id="fb")
            yield Static("", id="preview")

    def on_mount(self) -> None:
        self.query_one("#customize").border_title = "This machine"
        self.query_one("#hostname", Input).focus()
        for toggle in self.query(Toggle):
            self.watch(toggle, "value", lambda _value: self.refresh_preview(), init=False)
        self.refresh_preview()

    def fields(self) -> dict[str, Any]:
        return {
            "hostname": self.query_one("#hostname", Input).value,
            "names_csv": self.query_one("#names_csv", Input).value,
            "reset_machine_id": self.query_one("#mid", Toggle).value,
            "new_ssh_keys": self.query_one("#ssh", Toggle).value,
            "boot_entry": self.query_one("#entry", Toggle).value,
            "add_fallback": self.query_one("#fb", Toggle).value,
        }

    def refresh_preview(self) -> None:
        self.query_one("#preview", Static).update(
            "\n".join(preview(self.image, self.fields(), self.machine))
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        self.refresh_preview()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def action_next(self) -> None:
        f = self.fields()
        lines = preview(self.image, f, self.machine)
        bad = [ln for ln in lines if "REFUSED" in ln or "cannot be made" in ln]
        if bad:
            self.status(bad[0].strip(), error=True)
            return
        answers = {k: v.strip() if isinstance(v, str) else v for k, v in f.items()}
        self.dismiss({**answers, "machine": self.machine})
