"""Post-restore hooks: the technician's own scripts, run last with the restored disk described in
their environment (as Clonezilla's ocs_postrun does). Their output goes to the log; a hook that
fails fails the job, with its command and the tail of its output.

Environment each hook gets:
  BOOTMEDIA_DISK        the restored disk (/dev/sdb)
  BOOTMEDIA_PARTITIONS  its partitions, space-separated
  BOOTMEDIA_PART<N>     partition N (BOOTMEDIA_PART1=/dev/sdb1 ...)
  BOOTMEDIA_LINUX_ROOT, BOOTMEDIA_WINDOWS, BOOTMEDIA_ESP   where found ("" otherwise)
  BOOTMEDIA_HOSTNAME    the name given to the machine ("" when none)
  BOOTMEDIA_IMAGE       the image restored, when known
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from bootmedia.errors import ToolError, UsageError
from bootmedia.run import run

log = logging.getLogger("bootmedia.customize")
HOOK_TIMEOUT = 600.0


def check_hook(path: str) -> str:
    """The hook's absolute path; refused unless it is an executable regular file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise UsageError(f"hook {path}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"hook {path}: not a regular file")
    if not os.access(p, os.X_OK):
        raise UsageError(f"hook {path}: not executable (chmod +x it)")
    return str(p.resolve())


def hooks_in(directory: str | Path) -> list[str]:
    """Executable files in a hooks directory, in name order (10-first, 20-second...)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return [
        str(p.resolve())
        for p in sorted(d.iterdir())
        if p.is_file() and os.access(p, os.X_OK) and not p.name.startswith(".")
    ]


def hook_env(
    disk: str,
    partitions: dict[int, str],
    *,
    linux_root: str = "",
    windows: str = "",
    esp: str = "",
    hostname: str = "",
    image: str = "",
) -> dict[str, str]:
    env = {
        "BOOTMEDIA_DISK": disk,
        "BOOTMEDIA_PARTITIONS": " ".join(partitions[n] for n in sorted(partitions)),
        "BOOTMEDIA_LINUX_ROOT": linux_root,
        "BOOTMEDIA_WINDOWS": windows,
        "BOOTMEDIA_ESP": esp,
        "BOOTMEDIA_HOSTNAME": hostname,
        "BOOTMEDIA_IMAGE": image,
    }
    env.update({f"BOOTMEDIA_PART{n}": node for n, node in partitions.items()})
    return env


def run_hook(path: str, env: dict[str, str], timeout: float = HOOK_TIMEOUT) -> list[str]:
    """Run one hook (through env(1), so no shell is involved); its output lines, logged.

    The hook runs in its own process group, killed when the hook ends: a child it left in the
    background ('daemon &') would hold the output pipe open (the job waited the whole timeout,
    then failed a hook that had succeeded) and keep the restored filesystem busy."""
    argv = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), path]
    proc = run(argv, check=False, timeout=timeout, session=True)  # a timeout: ToolError
    text = proc.stdout.decode(errors="replace")
    lines = []
    for line in text.splitlines():
        log.info("hook %s: %s", os.path.basename(path), line)
        lines.append(line)
    if proc.returncode != 0:
        raise ToolError(argv, proc.returncode, text)
    return lines
