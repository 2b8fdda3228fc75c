"""Mount SMB, NFS and SSH repositories as local directories, so capture, apply, verify and
delete use the same crash-safe code on a share as on the stick.

SMB and NFS are mounted by the kernel (mount.cifs, mount.nfs); SSH with sshfs. sshfs rather than
paramiko or asyncssh: the repository is then a directory like any other, with the same O_EXCL
creates, renames and fsyncs (sshfs maps them to OpenSSH's posix-rename and fsync extensions),
so there is one write path to get right instead of two, and the live system needs no second SFTP
client. Mounts live under /run/bootmedia/net/ and stay for the session (the TUI) or for one
command (the CLI).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bootmedia.errors import BootmediaError, ToolError, UsageError
from bootmedia.net import credentials as creds_mod
from bootmedia.net.credentials import Credentials
from bootmedia.net.url import RepoURL, is_url, parse_url
from bootmedia.run import require_tools, run

log = logging.getLogger("bootmedia.net")

MOUNT_ROOT = Path(os.environ.get("BOOTMEDIA_NET_DIR", "/run/bootmedia/net"))
TIMEOUT = 60  # seconds for a mount to answer
# Asked for a password: (url, what) -> password, or None to give up. The TUI shows a prompt.
Prompt = Callable[[RepoURL, str], "str | None"]


@dataclass(frozen=True)
class Share:
    url: RepoURL
    mountpoint: Path

    @property
    def path(self) -> Path:
        """The repository directory: the mount itself for NFS and SSH (the URL's path is what
        is mounted), the path inside the share for SMB."""
        if self.url.scheme == "smb":
            return self.mountpoint / self.url.path.lstrip("/")
        return self.mountpoint

    def describe(self) -> str:
        return f"{self.url} (mounted on {self.mountpoint})"


def _slug(url: RepoURL) -> str:
    where = url.share if url.scheme == "smb" else url.path
    digest = hashlib.blake2s(f"{url.key}{where}".encode(), digest_size=5).hexdigest()
    return f"{url.scheme}-{url.host.strip('[]').replace(':', '_')}-{digest}"


def _mounted(mountpoint: Path) -> bool:
    target = str(mountpoint)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mount(url: RepoURL, creds: Credentials | None = None, prompt: Prompt | None = None) -> Share:
    """Mount url's share (or reuse the session's mount of it) and return where it is."""
    if not url.mounted:
        raise UsageError(f"{url}: {url.scheme}:// repositories are not mounted")
    mp = MOUNT_ROOT / _slug(url)
    share = Share(url, mp)
    if _mounted(mp):
        return share
    mp.mkdir(parents=True, exist_ok=True)
    if url.scheme == "smb":
        _mount_smb(url, mp, creds, prompt)
    elif url.scheme == "nfs":
        _mount_nfs(url, mp)
    else:
        _mount_ssh(url, mp, creds, prompt)
    log.info("mounted %s on %s", url, mp)
    if not share.path.is_dir():
        unmount(share)
        raise UsageError(f"{url}: {url.path} is not a directory on the share")
    return share


def unmount(share: Share) -> None:
    if not _mounted(share.mountpoint):
        return
    if share.url.scheme == "ssh":
        run(["fusermount3", "-u", str(share.mountpoint)], timeout=TIMEOUT)
    else:
        run(["umount", str(share.mountpoint)], timeout=TIMEOUT)
    with contextlib.suppress(OSError):
        share.mountpoint.rmdir()
    log.info("unmounted %s", share.url)


def _mount_smb(url: RepoURL, mp: Path, creds: Credentials | None, prompt: Prompt | None) -> None:
    require_tools("mount.cifs")
    user = (creds.user if creds else "") or url.user
    password = creds.password if creds else ""
    domain = (creds.domain if creds else "") or url.domain
    if user and not password and prompt is not None:
        password = prompt(url, f"password for {user} on {url.host}") or ""
    opts = ["uid=0", "gid=0", "file_mode=0644", "dir_mode=0755", "nobrl"]
    if url.version:
        opts.append(f"vers={url.version}")
    with tempfile.TemporaryDirectory(prefix="bootmedia-cred-") as tmp:
        if user:
            cred = Path(tmp) / "credentials"
            fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            lines = [f"username={user}", f"password={password}"]
            if domain:
                lines.append(f"domain={domain}")
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.close(fd)
            opts.append(f"credentials={cred}")
        else:
            opts.append("guest")
        source = f"//{url.host.strip('[]')}/{url.share}"
        try:
            run(["mount", "-t", "cifs", source, str(mp), "-o", ",".join(opts)], timeout=TIMEOUT)
        except ToolError as exc:
            raise BootmediaError(f"{url}: cannot mount the share: {_tail(exc)}") from None


def _mount_nfs(url: RepoURL, mp: Path) -> None:
    require_tools("mount.nfs")
    opts = ["hard", "timeo=150", "retrans=3"]
    if url.version:
        opts.append(f"vers={url.version}")
    try:
        run(
            ["mount", "-t", "nfs", f"{url.host}:{url.path}", str(mp), "-o", ",".join(opts)],
            timeout=TIMEOUT * 3,
        )
    except ToolError as exc:
        raise BootmediaError(f"{url}: cannot mount the export: {_tail(exc)}") from None


def _mount_ssh(url: RepoURL, mp: Path, creds: Credentials | None, prompt: Prompt | None) -> None:
    require_tools("sshfs", "fusermount3")
    user = (creds.user if creds else "") or url.user
    where = f"{user}@{url.host}" if user else url.host
    opts = [
        "reconnect",
        "ServerAliveInterval=15",
        "ServerAliveCountMax=3",
        "ConnectTimeout=20",
        "dir_cache=no",  # another machine may capture into the same repository
    ]
    if url.port:
        opts.append(f"port={url.port}")
    if creds and creds.key:
        opts += [f"IdentityFile={creds.key}", "IdentitiesOnly=yes"]
    if creds and creds.known_hosts:
        opts += [f"UserKnownHostsFile={creds.known_hosts}", "StrictHostKeyChecking=yes"]
    else:
        opts.append("StrictHostKeyChecking=accept-new")
    password = creds.password if creds else ""
    if (
        not password
        and not (creds and creds.key)
        and prompt is not None
        and _needs_password(url, where, opts)
    ):
        password = prompt(url, f"password for {where}") or ""
    if password:
        # One connection: sshfs reads the password once, so it refuses password_stdin with
        # max_conns > 1.
        opts += ["password_stdin", "PubkeyAuthentication=no", "NumberOfPasswordPrompts=1"]
    else:
        opts += ["BatchMode=yes", "max_conns=4"]
    argv = ["sshfs", f"{where}:{url.path}", str(mp), "-o", ",".join(opts)]
    try:
        # daemon: sshfs forks into the background and its ssh child keeps the stderr it was
        # given, so run() captures it in a file, not a pipe that would stay open.
        run(
            argv,
            input=(password + "\n").encode() if password else None,
            timeout=TIMEOUT,
            daemon=True,
        )
    except ToolError as exc:
        why = _refused_password(url, where, opts, password) if password else None
        raise BootmediaError(f"{url}: {why or exc}") from None


def _refused_password(url: RepoURL, where: str, opts: list[str], password: str) -> str | None:
    """sshfs types the password on a terminal of its own and keeps what ssh says there ("read:
    Connection reset by peer" is all it reports): ask ssh itself, with the same options and
    the password from an askpass helper, and return its failure (the command and its stderr:
    "Permission denied (password)." for a wrong one), or None if ssh logs in."""
    ssh_opts = [o for o in opts if o[0].isupper()]
    argv = ["ssh", *(x for o in ssh_opts for x in ("-o", o))]
    if url.port:
        argv += ["-p", str(url.port)]
    with tempfile.TemporaryDirectory(prefix="bootmedia-askpass-") as tmp:
        secret = Path(tmp) / "password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (password + "\n").encode())
        os.close(fd)
        helper = Path(tmp) / "askpass"
        fd = os.open(helper, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        os.write(fd, f"#!/bin/sh\nexec cat '{secret}'\n".encode())
        os.close(fd)
        try:
            # -s sftp: what sshfs asks for (an sftp-only account has no shell to run `true`);
            # the SFTP server ends at once on stdin's end.
            run(
                [*argv, "-s", where, "sftp"],
                timeout=TIMEOUT,
                env={"SSH_ASKPASS": str(helper), "SSH_ASKPASS_REQUIRE": "force"},
            )
        except ToolError as exc:
            return str(exc)
    return None


def _needs_password(url: RepoURL, where: str, opts: list[str]) -> bool:
    """Whether the server refuses us without a password (keys in ~/.ssh tried first)."""
    ssh_opts = [o for o in opts if o[0].isupper()]
    argv = ["ssh", "-o", "BatchMode=yes", *(x for o in ssh_opts for x in ("-o", o))]
    if url.port:
        argv += ["-p", str(url.port)]
    try:
        run([*argv, where, "true"], timeout=TIMEOUT)
    except ToolError:
        return True
    return False


def _tail(exc: ToolError) -> str:
    lines = [s.strip() for s in exc.stderr.strip().splitlines() if s.strip()]
    return " | ".join(lines[-2:]) or f"exit {exc.returncode}"


def _wait_gone(mp: Path, seconds: float = 5) -> None:
    end = time.monotonic() + seconds
    while _mounted(mp) and time.monotonic() < end:
        time.sleep(0.1)


def _remember(slug: str, url: str) -> None:
    """A sidecar naming what a mount point or placeholder stands for (no secrets: URLs never
    hold passwords), so plans and results can show the URL instead of the mount point."""
    MOUNT_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = MOUNT_ROOT / f".{slug}.url.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(url + "\n")
    os.replace(tmp, MOUNT_ROOT / f".{slug}.url")


def label(path: str | os.PathLike[str]) -> str:
    """What the technician named for a local repository path: the URL of a mounted share or
    an http placeholder, else the path itself."""
    text = os.fspath(path)
    try:
        rel = Path(text).relative_to(MOUNT_ROOT)
    except ValueError:
        return text
    if not rel.parts:
        return text
    side = MOUNT_ROOT / f".{rel.parts[0]}.url"
    try:
        url = side.read_text().strip()
    except OSError:
        return text
    return url


def connect(
    ref: str,
    *,
    credentials_file: Path | None = None,
    prompt: Prompt | None = None,
    creds: Credentials | None = None,
) -> str:
    """Like attach(), for the session: the share stays mounted (the TUI, unattended jobs).
    creds (typed into the TUI) win over the credentials file."""
    with attach(
        ref, credentials_file=credentials_file, prompt=prompt, keep=True, creds=creds
    ) as local:
        return local


@contextlib.contextmanager
def attach(
    ref: str | os.PathLike[str],
    *,
    credentials_file: Path | None = None,
    prompt: Prompt | None = None,
    keep: bool = False,
    creds: Credentials | None = None,
) -> Iterator[str]:
    """A repository named by path or URL -> the local path Repository.open takes: the
    directory itself, the mounted share, or for http(s) a placeholder directory naming the URL. The mount made here is
    undone at the end unless keep (the TUI keeps shares for the session)."""
    text = os.fspath(ref)
    if not is_url(text):
        yield text
        return
    url = parse_url(text)
    if not url.mounted:
        from bootmedia.net.http_repo import placeholder

        found = creds if creds is not None and creds.ca else creds_mod.load(url, credentials_file)
        where = placeholder(url, MOUNT_ROOT, found.ca if found else None)
        _remember(where.name, text)
        yield str(where)
        return
    if creds is None or not (creds.password or creds.key):
        creds = creds_mod.load(url, credentials_file) or creds
    mp = MOUNT_ROOT / _slug(url)
    already = _mounted(mp)
    share = mount(url, creds, prompt)
    _remember(mp.name, text)
    try:
        yield str(share.path)
    finally:
        if not keep and not already:
            unmount(share)
            _wait_gone(share.mountpoint)
