"""Repository URLs: what a technician types where a repository is named.

    smb://[user[;domain]@]server/share/path[?vers=3.0]   mounted by the kernel (mount.cifs)
    nfs://server/export/path[?vers=4.2]                  mounted by the kernel (mount.nfs)
    ssh://[user@]host[:port]/path                        mounted with sshfs (SFTP)
    http(s)://host[:port]/path                           read-only, fetched with Range requests

Anything else is a local directory. Passwords never appear in a URL: they come from the
credentials file on the stick or from a prompt (bootmedia.net.credentials).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from bootmedia.errors import UsageError

# The file that marks a local directory as standing for an http(s) repository (net/http_repo.py);
# here, so that checking for it does not import the http client.
REMOTE_FILE = "bootmedia-remote.json"

SCHEMES = ("smb", "nfs", "ssh", "http", "https")
MOUNTED = ("smb", "nfs", "ssh")  # the kernel or sshfs gives a local directory
SMB_VERSIONS = ("1.0", "2.0", "2.1", "3.0", "3.02", "3.1.1", "3", "default")
NFS_VERSIONS = ("3", "4", "4.0", "4.1", "4.2")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?)$")
_USER_RE = re.compile(r"^[A-Za-z0-9._@$-]{1,64}$")  # domain users may hold @, machine accounts $


def is_url(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(text)))


_SECRET_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):\S*@")


def redact(text: str) -> str:
    """`text` with any password typed into a URL (scheme://user:password@...) replaced by ***,
    for error messages and the log. Errs on the side of hiding: up to the last '@' of the word."""
    return _SECRET_RE.sub(r"\1:***@", str(text))


@dataclass(frozen=True)
class RepoURL:
    scheme: str
    host: str
    port: int | None = None
    user: str = ""
    domain: str = ""  # SMB only
    share: str = ""  # SMB share name
    path: str = "/"  # absolute, "/"-separated; for SMB, within the share
    version: str = ""  # SMB or NFS protocol version; "" = negotiate

    @property
    def mounted(self) -> bool:
        return self.scheme in MOUNTED

    @property
    def key(self) -> str:
        """What identifies the server account (credentials are looked up by it)."""
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        share = f"/{self.share}" if self.share else ""
        return f"{self.scheme}://{who}{self.host}{port}{share}"

    def __str__(self) -> str:
        who = ""
        if self.user:
            who = (f"{self.user};{self.domain}" if self.domain else self.user) + "@"
        port = f":{self.port}" if self.port else ""
        share = f"/{self.share}" if self.share else ""
        path = "" if self.path == "/" and self.share else self.path
        query = f"?vers={self.version}" if self.version else ""
        return f"{self.scheme}://{who}{self.host}{port}{share}{path}{query}"

    def http_base(self) -> str:
        """http(s) only: the URL of the repository's root, ending in '/'."""
        port = f":{self.port}" if self.port else ""
        path = self.path if self.path.endswith("/") else self.path + "/"
        return f"{self.scheme}://{self.host}{port}{path}"


def parse_url(text: str) -> RepoURL:
    """Parse and check a repository URL; a one-line UsageError says what is wrong."""
    given = str(text).strip()
    text = redact(given)  # what the messages below show: never a typed password
    try:
        parts = urlsplit(given)
        port = parts.port
    except ValueError as exc:
        why = f" ({exc})" if text == given else ""  # the reason may quote part of a password
        raise UsageError(f"{text}: not a valid URL{why}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"{text}: unsupported repository URL (use smb://, nfs://, ssh://, http:// or https://)"
        )
    if parts.password is not None:
        raise UsageError(
            f"{scheme}://{parts.hostname or ''}: a password in the URL would show on the screen "
            "and in the log; put it in the credentials file on the stick or type it when asked"
        )
    if parts.fragment:
        raise UsageError(f"{text}: a repository URL has no #fragment")
    host = parts.hostname or ""
    if not host or not _HOST_RE.match(host if ":" not in host else f"[{host}]"):
        raise UsageError(f"{text}: no valid server name")
    if ":" in host:
        host = f"[{host}]"
    user_text = unquote(parts.username or "")
    user, _, domain = user_text.partition(";")
    if user and not _USER_RE.match(user):
        raise UsageError(f"{text}: bad user name {user!r}")
    if domain and (scheme != "smb" or not _USER_RE.match(domain)):
        raise UsageError(f"{text}: a ;domain is for smb:// users only")
    if user and scheme in ("http", "https"):
        raise UsageError(f"{text}: http repositories are read without a user")
    if user and scheme == "nfs":
        raise UsageError(f"{text}: NFS has no user name (the server trusts the client's address)")
    path = unquote(parts.path) or "/"
    if any(seg in (".", "..") for seg in path.split("/")) or "\x00" in path:
        raise UsageError(f"{text}: the path may not hold '.' or '..' parts")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    version = query.pop("vers", "")
    if query:
        raise UsageError(f"{text}: unknown option {next(iter(query))!r} (only vers=)")
    if version:
        allowed = SMB_VERSIONS if scheme == "smb" else NFS_VERSIONS if scheme == "nfs" else ()
        if version not in allowed:
            raise UsageError(
                f"{text}: vers={version} is not an "
                + (f"{scheme.upper()} version ({', '.join(allowed)})" if allowed else "option here")
            )
    share = ""
    if scheme == "smb":
        segs = [s for s in path.split("/") if s]
        if not segs:
            raise UsageError(f"{text}: name the share, e.g. smb://server/share/images")
        share, path = segs[0], "/" + "/".join(segs[1:])
    elif scheme in ("nfs", "ssh") and path == "/":
        raise UsageError(f"{text}: name the repository's path on the server")
    if port is not None and scheme in ("smb", "nfs"):
        raise UsageError(f"{text}: a port is not supported for {scheme}:// (standard ports only)")
    path = "/" + "/".join(s for s in path.split("/") if s)
    return RepoURL(scheme, host, port, user, domain, share, path, version)


def build_url(
    scheme: str, server: str, path: str, user: str = "", port: str = "", version: str = ""
) -> RepoURL:
    """A URL from the Network share screen's fields, checked like a typed one (the password
    is never part of it)."""
    scheme = scheme.lower().strip()
    server, path, user, port = server.strip(), path.strip(), user.strip(), port.strip()
    if not server:
        raise UsageError("give the server's name or address")
    if port and not port.isdigit():
        raise UsageError(f"port {port!r} is not a number")
    who = f"{quote(user, safe=';$@')}@" if user else ""
    where = f"{server}:{port}" if port else server
    query = f"?vers={version.strip()}" if version.strip() else ""
    path = "/" + "/".join(quote(s) for s in path.split("/") if s)
    return parse_url(f"{scheme}://{who}{where}{path}{query}")
