"""Passwords and keys for network repositories: from a file on the stick, or typed in.

Never from the command line the TUI shows, and never into the log: a Credentials object prints
as "<credentials for ...>", mount passwords go to mount.cifs in a 0600 file that is removed
right after the mount, and to sshfs on its standard input.

The file is TOML, `bootmedia-credentials.toml` on the stick's data partition (or --credentials):

    [[share]]
    url = "smb://tech;OFFICE@fileserver/images"   # matched on scheme, user, server, port, share
    password = "..."

    [[share]]
    url = "ssh://tech@10.0.0.5"
    key = "keys/id_ed25519"          # relative to the file's directory
    known_hosts = "keys/known_hosts" # pin the server's host key (else: accepted on first use)

    [[share]]
    url = "https://images.example.lan"
    ca = "certs/office-ca.pem"       # trust only this CA for the server (else: the system's)
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from bootmedia.errors import UsageError
from bootmedia.net.url import RepoURL, parse_url
from bootmedia.stick.data import DATA_DIR

FILE_NAME = "bootmedia-credentials.toml"


@dataclass(frozen=True)
class Credentials:
    user: str = ""
    password: str = field(default="", repr=False)
    domain: str = ""
    key: Path | None = None
    known_hosts: Path | None = None
    ca: Path | None = None
    source: str = ""

    def __repr__(self) -> str:
        return f"<credentials for {self.user or '?'} from {self.source or 'prompt'}>"

    __str__ = __repr__


def default_file() -> Path | None:
    env = os.environ.get("BOOTMEDIA_CREDENTIALS")
    if env:
        return Path(env)
    path = DATA_DIR / FILE_NAME
    return path if path.exists() else None


def _matches(entry: RepoURL, url: RepoURL) -> bool:
    if (entry.scheme, entry.host.lower(), entry.port) != (url.scheme, url.host.lower(), url.port):
        return False
    if entry.user and url.user and entry.user != url.user:
        return False
    return not (entry.share and entry.share.lower() != url.share.lower())


def load(url: RepoURL, path: Path | None = None) -> Credentials | None:
    """The credentials file's entry for url (the most specific match), or None."""
    path = path or default_file()
    if path is None:
        return None
    try:
        st = path.stat()
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: credentials file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: unreadable credentials file ({exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: credentials file is not a regular file")
    entries = data.get("share", [])
    if not isinstance(entries, list):
        raise UsageError(f"{path}: [[share]] entries expected")
    best: tuple[int, Credentials] | None = None
    for i, raw in enumerate(entries, 1):
        if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
            raise UsageError(f"{path}: share {i} has no url")
        unknown = set(raw) - {"url", "user", "password", "domain", "key", "known_hosts", "ca"}
        if unknown:
            raise UsageError(f"{path}: share {i}: unknown key {sorted(unknown)[0]!r}")
        for k, v in raw.items():
            if not isinstance(v, str):
                raise UsageError(f"{path}: share {i}: {k} must be a string")
        try:
            entry = _parse_entry(raw["url"])
        except UsageError as exc:
            raise UsageError(f"{path}: share {i}: {exc}") from None
        if "ca" in raw and entry.scheme != "https":
            raise UsageError(f"{path}: share {i}: ca is for https:// servers")
        if not _matches(entry, url):
            continue
        score = bool(entry.user) + bool(entry.share)
        here = path.parent
        creds = Credentials(
            user=raw.get("user", "") or entry.user or url.user,
            password=raw.get("password", ""),
            domain=raw.get("domain", "") or entry.domain,
            key=(here / raw["key"]) if raw.get("key") else None,
            known_hosts=(here / raw["known_hosts"]) if raw.get("known_hosts") else None,
            ca=(here / raw["ca"]) if raw.get("ca") else None,
            source=str(path),
        )
        for f in (creds.key, creds.known_hosts, creds.ca):
            if f is not None and not f.is_file():
                raise UsageError(f"{path}: share {i}: {f} is not a file")
        if best is None or score > best[0]:
            best = (score, creds)
    return best[1] if best else None


def _parse_entry(text: str) -> RepoURL:
    """An entry's url may stop at the server or the share."""
    try:
        return parse_url(text)
    except UsageError:
        # "ssh://host" or "smb://server" without a path or share: match on the server alone.
        return replace(parse_url(text.rstrip("/") + "/x"), share="", path="/")
