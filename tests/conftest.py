"""Shared fixtures. Real-device tests use loop devices and skip (saying why) where they can't."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bootmedia import lab

_CAN_LOOP, _WHY_NOT = lab.can_use_loop()

# `root`: the test needs root and loop devices; it is skipped, saying why, where they are missing.
root_only = pytest.mark.root


def pytest_report_header(config: pytest.Config) -> str:
    """Free space where the tests' disk images go: a full disk fails many tests at once."""
    base = config.option.basetemp or tempfile.gettempdir()
    while not Path(base).exists():
        base = str(Path(base).parent)
    free = shutil.disk_usage(base).free
    return f"free space for test disk images under {base}: {free / 2**30:.1f} GiB"


@pytest.fixture(autouse=True, scope="session")
def _index_cache_dir() -> Iterator[None]:
    """The index caches of the tests' repositories (one SQLite file per repository, up to a
    few MB each) in a directory of this run, removed at its end: hundreds of test
    repositories left about 0.5 GB in /var/cache/bootmedia per run. World-writable with the
    sticky bit, like /tmp, for the tests that run bootmedia as another user."""
    if os.environ.get("BOOTMEDIA_CACHE_DIR"):
        yield
        return
    where = tempfile.mkdtemp(prefix="bootmedia-test-cache-")
    os.chmod(where, 0o1777)
    os.environ["BOOTMEDIA_CACHE_DIR"] = where
    try:
        yield
    finally:
        os.environ.pop("BOOTMEDIA_CACHE_DIR", None)
        shutil.rmtree(where, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not _CAN_LOOP:
        pytest.skip(_WHY_NOT or "loop devices unavailable")


# -- the test guard -------------------------------------------------------------------------
# A unit test must never run sfdisk, wipefs or dd by accident: one wrong fake and a test would
# write to a real device. So every process that bootmedia (or app/) starts goes through a guard
# that refuses unless the test asked for real tools: it uses `loopdev`, is marked `root` or
# `real_tools`, or lives under tests/e2e. Tests that start processes themselves (ruff, mypy, a
# CLI in a fresh interpreter) are not affected; the child bootmedia inherits
# BOOTMEDIA_NO_TOOLS and refuses in the same way (bootmedia.run checks it).

_REAL_POPEN = subprocess.Popen
_E2E = Path(__file__).resolve().parent / "e2e"
_GUARDED_PACKAGES = ("bootmedia", "app")
# Fixtures that attach loop devices (tests/tui builds its demo lab on them).
_REAL_TOOL_FIXTURES = {"loopdev", "demo_lab", "lab_template"}


class ToolGuardError(AssertionError):
    """A test without real tools tried to start a process from bootmedia or app."""


def _started_by_our_code() -> str | None:
    """The name of the bootmedia/app module that is starting a process, if any."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.split(".")[0] in _GUARDED_PACKAGES:
            return str(name)
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _wants_real_tools(request: pytest.FixtureRequest) -> bool:
    node = request.node
    if _REAL_TOOL_FIXTURES.intersection(request.fixturenames):
        return True
    if node.get_closest_marker("root") or node.get_closest_marker("real_tools"):
        return True
    return _E2E in Path(str(node.path)).resolve().parents


@pytest.fixture(autouse=True)
def _tool_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if _wants_real_tools(request):
        monkeypatch.delenv("BOOTMEDIA_NO_TOOLS", raising=False)
        return
    test = request.node.nodeid

    class GuardedPopen(_REAL_POPEN):
        def __init__(self, args: Any, *a: Any, **kw: Any) -> None:
            caller = _started_by_our_code()
            if caller is not None:
                raise ToolGuardError(
                    f"{caller} tried to run {args!r} in {test}, which did not ask for real "
                    "tools (use the loopdev fixture, or mark it @pytest.mark.real_tools / root)"
                )
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    monkeypatch.setenv("BOOTMEDIA_NO_TOOLS", test)


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
