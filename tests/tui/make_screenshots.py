"""Export the main screens as SVG for the README (docs/screenshots/), from the recorded machine.

python tests/tui/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import pytest  # noqa: E402
import recorded  # noqa: E402
from test_tui_snapshots import SCREENS  # noqa: E402

from app.app import BootmediaApp  # noqa: E402
from app.session import Session  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


async def export(name: str, size: tuple[int, int]) -> Path:
    patch = pytest.MonkeyPatch()
    recorded.install(patch)
    patch.setattr("app.flows.restore.plan_restore", lambda *a, **k: recorded.recorded_restore_job())
    app = BootmediaApp(Session(log_path=Path("/var/log/bootmedia/bootmedia.log")))
    app.release = threading.Event()  # type: ignore[attr-defined]
    path = OUT / f"{name.replace('_', '-')}.svg"
    try:
        async with app.run_test(size=size) as pilot:
            await SCREENS[name](pilot)
            app.save_screenshot(path.name, str(OUT))
            app.release.set()  # type: ignore[attr-defined]
    finally:
        patch.undo()
    return path


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in SCREENS:
        print(asyncio.run(export(name, (80, 25))))


if __name__ == "__main__":
    main()
