"""Issue 13 items 1 and 3 on the real lab: the Contents column never says "empty" about data,
and the lab follows its own files, never loop numbers."""

from __future__ import annotations

import os
from typing import Any

from tui_helpers import async_test, needs_loop, screen_text, wait_for, wait_for_screen

from bootmedia.disks import INCOMPLETE_MARKER

pytestmark = needs_loop
MiB = 1 << 20


@async_test
async def test_data_without_a_table_and_an_incomplete_restore_are_not_empty(
    demo_lab: Any, make_app: Any
) -> None:
    with open(demo_lab.loops["newpc-2.img"], "r+b") as f:  # a raw copy: no table, no signature
        f.seek(300 * MiB)
        f.write(os.urandom(48 * MiB))
    with open(demo_lab.loops["newpc-1.img"], "r+b") as f:  # what a cancelled restore leaves
        f.write(INCOMPLETE_MARKER)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        await wait_for(pilot, lambda: "INCOMPLETE RESTORE" in screen_text(app), what="home")
        home = screen_text(app)
        assert "no partition table, data present" in home, home
        assert "empty" not in home
        await pilot.press("r")
        await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: "golden" in screen_text(app), what="image list")
        await pilot.press("enter")
        picker = await wait_for_screen(pilot, "DiskPickScreen")
        await wait_for(pilot, lambda: picker.query_one("DiskTable").row_count == 4, what="disks")
        text = screen_text(app)
        assert "INCOMPLETE RESTORE" in text
        assert "no partition table, data present" in text, text
        assert "empty" not in text
