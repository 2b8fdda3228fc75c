"""Helpers shared by the disk, wipe and partition tests.

`loopdev` here shadows the conftest fixture of the same name: same factory, but its teardown
passes str paths to run() (conftest's passes Path objects, which run() rejects, leaving loop
devices attached after every test). Drop this once conftest is fixed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootmedia import lab

MiB = 1 << 20


@pytest.fixture
def loopdev(tmp_path: Path) -> Iterator[Callable[..., str]]:
    ok, why = lab.can_use_loop()
    if not ok:
        pytest.skip(why)
    attached: list[str] = []
    counter = iter(range(1000))

    def make(source: int | str | Path, sector_size: int = 512, read_only: bool = False) -> str:
        if isinstance(source, int):
            source = lab.make_file(tmp_path / f"disk{next(counter)}.img", source)
        dev = lab.attach(source, sector_size, read_only)
        attached.append(dev)
        return dev

    yield make
    for dev in reversed(attached):
        parts = [str(p) for p in sorted(Path("/dev").glob(Path(dev).name + "p*"))]
        for part in parts:
            subprocess.run(["swapoff", part], capture_output=True, check=False)
        if parts:
            subprocess.run(["umount", "-l", *parts], capture_output=True, check=False)
        lab.detach(dev)


def sh(*argv: str, input: str | None = None) -> str:
    """Run a tool for test setup; fail the test loudly if it fails."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


def is_direct(fd: int) -> bool:
    """Whether this process's fd was opened with O_DIRECT (from /proc/self/fdinfo)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
    return bool(flags & os.O_DIRECT)
