"""blkid's low-level probe: `blkid -p` reads the device itself, never a stale cache."""

from __future__ import annotations

from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.run import run

NOTHING_FOUND = 2  # blkid's exit status when no signature is there


def argv(path: str | Path, offset: int | None = None, size: int | None = None) -> list[str]:
    """The command line: a device, or the byte range [offset, offset+size) of a file."""
    cmd = ["blkid", "-p", "-o", "export"]
    if offset is not None:
        cmd += ["-O", str(offset)]
    if size is not None:
        cmd += ["--size", str(size)]
    return [*cmd, str(path)]


def parse(out: str) -> dict[str, str]:
    """`-o export` lines: KEY=value, with blkid's backslash escapes of spaces and backslashes."""
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key != "DEVNAME":
            values[key] = value.replace("\\ ", " ").replace("\\\\", "\\")
    return values


def probe(
    path: str | Path,
    offset: int | None = None,
    size: int | None = None,
    *,
    strict: bool = True,
) -> dict[str, str]:
    """Every value blkid finds ({} when it finds nothing). strict=False: a node that cannot be
    probed (gone, unreadable) also gives {}, for discovery over many nodes."""
    proc = run(argv(path, offset, size), check=False)
    if proc.returncode == NOTHING_FOUND:
        return {}
    if proc.returncode != 0:
        if not strict:
            return {}
        where = f" at {offset}" if offset is not None else ""
        raise BootmediaError(f"blkid -p {path}{where} failed: {proc.stderr.decode().strip()}")
    return parse(proc.stdout.decode(errors="replace"))


def content(values: dict[str, str]) -> dict[str, str]:
    """The values when they describe contents (a filesystem, swap, crypto...); {} for a
    partition table found inside a partition and the like."""
    if values.get("USAGE") not in ("filesystem", "crypto", "other", None):
        return {}
    return values


def find_label(label: str) -> str | None:
    """The node holding a filesystem labelled LABEL (`blkid -L`), or None."""
    proc = run(["blkid", "-L", label], check=False)
    device = proc.stdout.decode(errors="replace").strip()
    return device if proc.returncode == 0 and device else None
