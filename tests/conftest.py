"""Shared fixtures. Real-device tests use loop devices and skip (saying why) where they can't."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootmedia import lab

_CAN_LOOP, _WHY_NOT = lab.can_use_loop()

root_only = pytest.mark.skipif(not _CAN_LOOP, reason=_WHY_NOT or "loop devices unavailable")


@pytest.fixture
def loopdev(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory: loopdev(size_or_path, sector_size=512, read_only=False) -> /dev/loopN.

    Every device attached through it is detached at teardown, even when the test fails.
    """
    if not _CAN_LOOP:
        pytest.skip(_WHY_NOT)
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
        parts = sorted(str(p) for p in Path("/dev").glob(Path(dev).name + "p*"))
        if parts:
            lab.run(["umount", "-l", *parts], check=False)
        lab.detach(dev)
