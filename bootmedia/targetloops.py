"""Loop devices a job sets up over a range of its own target (a restore by files makes and
mounts the new filesystem there), recorded so that what a SIGKILL leaves is cleaned.

    record = record_target_loop("/dev/loop7", "/dev/sdb", 1048576)   # right after losetup
    ...
    record.unlink()                                                   # after losetup -d

A disk with a loop device over it is refused (bootmedia.disks.safety): whatever uses that
loop device would be overwritten. A killed job's own loop device is the one exception: the
next restore or clone unmounts it and detaches it (clean_target_loops, run with the image
views' cleanup before the first write; it waits up to a minute for a lazily unmounted
filesystem to let go), saying so in one line. One it cannot get rid of (held still, by a mount
in another mount namespace) keeps its target refused. A record names the loop
device, what it was set up over and where, and the job (pid and start time), so a record is
acted on only while its job is dead and the loop device is still the one it names.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from bootmedia.run import run_cleanup
from bootmedia.scratch import alive, owner_tag, start_time

GONE_WAIT = 60.0  # seconds a detached loop device may take to go (its filesystem's log)


def records_dir() -> Path:
    env = os.environ.get("BOOTMEDIA_RUNTIME_DIR")
    if env:
        return Path(env) / "target-loops"
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/bootmedia/target-loops")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/bootmedia-{os.geteuid()}"
    return Path(base) / "bootmedia" / "target-loops"


def record_target_loop(loop: str, backing: str, offset: int) -> Path:
    where = records_dir()
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{owner_tag()}-{Path(loop).name}.json"
    facts = {
        "job": os.getpid(),
        "job_start": start_time(os.getpid()),
        "loop": loop,
        "backing": backing,
        "offset": offset,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts))
    os.replace(tmp, path)
    return path


def _still_there(facts: dict[str, object]) -> bool:
    """The loop device is still the one the record names (set up over the same thing, at the
    same offset): a number reused since by someone else is never touched."""
    name = Path(str(facts.get("loop", ""))).name
    if not name.startswith("loop"):
        return False
    sysdir = Path("/sys/block") / name / "loop"
    try:
        backing = (sysdir / "backing_file").read_text().strip()
        offset = int((sysdir / "offset").read_text())
    except FileNotFoundError:
        return False  # detached: sysfs has no loop/ for it any more
    except (OSError, ValueError):
        return True  # in the middle of a change: not known to be gone
    return backing == facts.get("backing") and offset == facts.get("offset")


def dead_target_loops(cleaned: bool = True) -> list[tuple[Path, str]]:
    """(record, loop device) of killed jobs whose loop device is still there; without
    `cleaned`, not those a cleanup already unmounted and detached in vain (still held)."""
    out = []
    try:
        records = sorted(records_dir().glob("*.json"))
    except OSError:
        return []
    for rec in records:
        try:
            facts = json.loads(rec.read_text())
            job = int(facts["job"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive(job, str(facts.get("job_start", ""))):
            continue
        if _still_there(facts):
            if cleaned or not facts.get("cleaned"):
                out.append((rec, str(facts["loop"])))
        else:
            with contextlib.suppress(OSError):
                rec.unlink()  # the loop device went away: nothing left to clean
    return out


def _mounts_of(name: str) -> list[str]:
    """Where the block device `name` is mounted (mountinfo's device number; its mount points
    octal-escaped there). Read here, not through bootmedia.disks, which imports this module."""
    try:
        devnum = (Path("/sys/block") / name / "dev").read_text().strip()
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[2] == devnum:
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return out


def clean_target_loops() -> list[str]:
    """Unmount (lazily) and detach each killed job's loop device; one line per device."""
    lines = []
    for rec, loop in dead_target_loops():
        try:  # one already found held is tried again, without waiting: it is no job's wait
            tried = bool(json.loads(rec.read_text()).get("cleaned"))
        except (OSError, ValueError):
            continue
        name = Path(loop).name
        done = []
        for where in _mounts_of(name):
            if run_cleanup(["umount", "-l", where]):
                done.append(f"unmounted {where}")
        run_cleanup(["losetup", "-d", loop])  # held still: detached when let go (autoclear)
        if _gone(rec, 0.0 if tried else GONE_WAIT):
            done.append(f"detached {loop}")
            lines.append(
                f"a killed bootmedia job left a loop device over its target: {', '.join(done)}"
            )
            with contextlib.suppress(OSError):
                rec.unlink()
            continue
        with contextlib.suppress(OSError, ValueError):
            rec.write_text(json.dumps({**json.loads(rec.read_text()), "cleaned": True}))
        lines.append(
            f"a killed bootmedia job left {loop} over its target; unmounted and detached, it is "
            "still held (a mount of it in another mount namespace?): its target stays refused "
            "until it is gone"
        )
    return lines


def _gone(rec: Path, wait: float = GONE_WAIT) -> bool:
    """Whether the record's loop device is gone, waiting for it: a lazily unmounted filesystem
    lets go of its device only once it has written its log, which can take seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            facts = json.loads(rec.read_text())
        except (OSError, ValueError):
            return True
        if not _still_there(facts):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
