"""Network share: connect an SMB, NFS, SSH or HTTP repository for the session.

Protocol, server, share or path, user, password, then Connect. The password goes to the mount
in memory (bootmedia.net), never into the command shown or the log. Once connected, the
share's images appear in the image picker next to the stick's, and it stays mounted.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.widgets import Input, Select, Static

from app.messages import Loaded, LoadFailed
from app.screens.base import BaseScreen
from bootmedia.errors import BootmediaError
from bootmedia.net.credentials import Credentials
from bootmedia.net.mount import connect
from bootmedia.net.url import build_url

PROTOCOLS = (
    ("SMB (Windows share)", "smb"),
    ("NFS", "nfs"),
    ("SSH (SFTP)", "ssh"),
    ("HTTP (read-only)", "http"),
    ("HTTPS (read-only)", "https"),
)
PATH_HINT = {
    "smb": "share/folder, e.g. images/lab",
    "nfs": "export path, e.g. /srv/images",
    "ssh": "path on the server, e.g. /srv/images",
    "http": "path on the server, e.g. /images",
    "https": "path on the server, e.g. /images",
}


class NetworkShareScreen(BaseScreen[Path]):
    """Dismisses with the repository's local path once connected."""

    TITLE_TEXT = "Network share"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("ctrl+o", "connect", "Connect", key_display="^O"),
    ]
    DEFAULT_CSS = """
    NetworkShareScreen Grid {
        grid-size: 2; grid-columns: 17 1fr; grid-rows: 1; grid-gutter: 1 0; height: auto;
        padding: 1 1;
    }
    NetworkShareScreen Grid > Static { padding: 0; }
    NetworkShareScreen Input { border: none; height: 1; padding: 0 1; width: 1fr; }
    NetworkShareScreen Input:focus { background: $accent 40%; }
    NetworkShareScreen Select { width: 1fr; height: 1; }
    NetworkShareScreen Select > SelectCurrent { border: none; height: 1; padding: 0 1; }
    NetworkShareScreen Select:focus > SelectCurrent { background: $accent 40%; }
    NetworkShareScreen #command { height: 4; padding: 0 1; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static(
            "Connect a repository on the network. Enter on the last field, or ^O, connects.",
            classes="heading",
        )
        with Grid():
            yield Static("Protocol")
            yield Select(PROTOCOLS, value="smb", allow_blank=False, id="protocol")
            yield Static("Server")
            yield Input(placeholder="name or address, e.g. fileserver", id="server")
            yield Static("Port")
            yield Input(placeholder="(standard)", id="port")
            yield Static("Share / path")
            yield Input(placeholder=PATH_HINT["smb"], id="path")
            yield Static("User")
            yield Input(placeholder="(none)", id="user")
            yield Static("Password")
            yield Input(
                placeholder="(from the stick's credentials file)", password=True, id="password"
            )
            yield Static("SMB/NFS version")
            yield Input(placeholder="(negotiated) e.g. 3.0, 2.1, 4.2", id="version")
        yield Static("", id="command", classes="pane")

    FIELDS = ("server", "port", "path", "user", "version")  # remembered; the password never

    def on_mount(self) -> None:
        # What was typed the last time, in this session: a second connect is one key.
        protocol = self.session.recall("share.protocol")
        if protocol:
            self.query_one("#protocol", Select).value = protocol
        for name in self.FIELDS:
            self.query_one(f"#{name}", Input).value = self.session.recall(f"share.{name}")
        self.query_one("#server", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        proto = str(event.value)
        self.query_one("#path", Input).placeholder = PATH_HINT.get(proto, "")
        self.show_command()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "password":
            self.show_command()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "version":
            self.action_connect()
        else:
            self.focus_next()

    def _value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value

    def url_text(self) -> str:
        proto = str(self.query_one("#protocol", Select).value)
        return str(
            build_url(
                proto,
                self._value("server"),
                self._value("path"),
                self._value("user"),
                self._value("port"),
                self._value("version"),
            )
        )

    def show_command(self) -> None:
        try:
            text = f"The CLI takes this URL wherever it names a repository:\nbootmedia images {self.url_text()}"
        except BootmediaError as exc:
            text = str(exc)
        self.query_one("#command", Static).update(text)

    def action_connect(self) -> None:
        try:
            url = self.url_text()
        except BootmediaError as exc:
            self.status(str(exc), error=True)
            return
        self.session.remember("share.protocol", str(self.query_one("#protocol", Select).value))
        for name in self.FIELDS:
            self.session.remember(f"share.{name}", self._value(name))
        user, password = self._value("user"), self._value("password")
        creds = Credentials(user=user, password=password, source="typed in") if password else None
        self.status(f"Connecting to {url} ...")
        self.run_blocking("connect", connect, url, creds=creds)

    def on_loaded(self, message: Loaded) -> None:
        if message.what != "connect":
            return
        path = Path(message.value)
        self.query_one("#password", Input).value = ""
        self.session.add_repo(path)
        self.dismiss(path)

    def on_load_failed(self, message: LoadFailed) -> None:
        self.status(message.reason, error=True)


class JoinCastScreen(BaseScreen[dict[str, str]]):
    """Join a multicast session (bootmedia cast): where missed chunks come from, and the
    session's rendezvous address. Dismisses with the settings."""

    TITLE_TEXT = "Join a multicast session"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("ctrl+o", "go", "Next", key_display="^O"),
    ]
    DEFAULT_CSS = NetworkShareScreen.DEFAULT_CSS.replace("NetworkShareScreen", "JoinCastScreen")

    def __init__(self, title: str = "", fallback: str = "") -> None:
        super().__init__(title)
        self.fallback = fallback

    def compose_body(self) -> ComposeResult:
        from bootmedia.cast.sender import DEFAULT_RDV

        yield Static(
            "The sender runs 'bootmedia cast'. Chunks this machine misses come from the "
            "fallback repository (a URL or a directory; blank: none).",
            classes="heading",
        )
        with Grid():
            yield Static("Fallback repository")
            yield Input(value=self.fallback, placeholder="e.g. http://server/images", id="fallback")
            yield Static("Rendezvous")
            yield Input(value=DEFAULT_RDV, id="rdv")
            yield Static("Interface")
            yield Input(placeholder="(udpcast's choice)", id="interface")
            yield Static("Image (optional)")
            yield Input(placeholder="(the one the session sends)", id="image")

    def on_mount(self) -> None:
        for k in ("fallback", "rdv", "interface"):
            if self.session.recall(f"cast.{k}"):
                self.query_one(f"#{k}", Input).value = self.session.recall(f"cast.{k}")
        self.query_one("#fallback", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "image":
            self.action_go()
        else:
            self.focus_next()

    def action_go(self) -> None:
        values = {
            k: self.query_one(f"#{k}", Input).value.strip()
            for k in ("fallback", "rdv", "interface", "image")
        }
        for k in ("fallback", "rdv", "interface"):
            self.session.remember(f"cast.{k}", values[k])
        self.dismiss(values)
