"""Issue 13 item 9: the Log screen shows this session's lines (its pid), from INFO up; `a`
shows every process and level. The log file is written by bootmedia's own formatter."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tui_helpers import async_test, flat_text, footer_cut, needs_loop, wait_for, wait_for_screen

from bootmedia.log import _FORMAT, PrintableFormatter

pytestmark = needs_loop


def _write_log(path: Path) -> None:
    """Lines as bootmedia.log gets them: this process through the real handler and format,
    and a line of another process (a CLI job in the shell) in the same format."""
    handler = logging.FileHandler(path)
    handler.setFormatter(PrintableFormatter(_FORMAT))
    logger = logging.getLogger("bootmedia.test-log-screen")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.info("restore golden onto loop5 started")
        logger.debug("+ sfdisk --json /dev/loop5")
        try:
            raise OSError("a traceback line")
        except OSError:
            logger.exception("this session failed once")
    finally:
        logger.removeHandler(handler)
        handler.close()
    other = os.getpid() + 1 if os.getpid() < 4_000_000 else 2
    with open(path, "a") as f:
        f.write(f"2026-12-01 23:00:00,000 INFO [{other}] bootmedia.cli: someone else's job\n")


@async_test
async def test_log_screen_shows_this_session_and_a_shows_everything(
    demo_lab: Any, make_app: Any
) -> None:
    app = make_app(demo_lab)
    _write_log(app.session.log_path)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        await pilot.press("l")
        await wait_for_screen(pilot, "LogScreen")
        await wait_for(pilot, lambda: "started" in flat_text(app), what="this session's line")
        shown = flat_text(app)
        assert f"this session (pid {os.getpid()})" in shown, shown
        assert "restore golden onto loop5 started" in shown
        assert "this session failed once" in shown and "OSError: a traceback line" in shown
        assert "sfdisk --json" not in shown and "someone else's job" not in shown, shown
        assert not footer_cut(app) and "a All processes" in shown
        await pilot.press("a")
        await wait_for(pilot, lambda: "someone else's job" in flat_text(app), what="all")
        shown = flat_text(app)
        assert "sfdisk --json" in shown and "every process, every level" in shown, shown
