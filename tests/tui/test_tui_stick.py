"""Issue 13 item 12: Make stick from the TUI on the real lab: pick the ISO, pick the stick,
confirm by its serial, progress, and the ISO read back on the stick."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import (
    async_test,
    needs_loop,
    pick_choice,
    screen_text,
    type_text,
    wait_for,
    wait_for_plan,
    wait_for_screen,
)

pytestmark = [
    needs_loop,
    pytest.mark.skipif(
        not (shutil.which("grub-mkrescue") and Path("/usr/lib/grub/x86_64-efi").is_dir()),
        reason="grub-mkrescue with grub-efi-amd64-bin is not installed (scripts/deps.sh)",
    ),
]


@async_test
async def test_make_the_stick_from_the_menu(demo_lab: Any, make_app: Any) -> None:
    stick = demo_lab.loops["newpc-2.img"]
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        assert "write the live USB stick" in screen_text(app)
        await pilot.press("m")
        isos = await wait_for_screen(pilot, "IsoPickScreen")
        menu = isos.query_one("OptionList")
        await wait_for(pilot, lambda: menu.option_count > 0, timeout=60, what="the sample ISO")
        iso = Path(menu.get_option_at_index(0).id or "")
        assert iso.name == "sample-live.iso"
        await pilot.press("enter")
        picker = await wait_for_screen(pilot, "DiskPickScreen")
        table = picker.query_one("DiskTable")
        await wait_for(pilot, lambda: table.row_count == 4, what="the lab's disks")
        assert table.rows_by_key[demo_lab.loops["stick.img"]].refusal  # the boot stick: never
        table.move_cursor(row=list(table.rows_by_key).index(stick))
        await pilot.pause()
        await pilot.press("enter")
        await pick_choice(pilot, "ext4", what="data filesystems")
        await pilot.press("enter")
        summary = await wait_for_plan(pilot, "stick plan")
        text = screen_text(app)
        assert "Command line: bootmedia make-usb" in text
        assert any("then read it back and compare" in line for line in summary.job.summary)
        await type_text(pilot, summary.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=180)
        assert result.outcome.ok, result.outcome
        assert "read back: identical" in screen_text(app)
    size = iso.stat().st_size
    with open(iso, "rb") as a, open(stick, "rb") as b:
        # The live system is on the stick byte for byte, but for the tables sfdisk edits when
        # it adds the data partition (MBR entry, GPT entries, the relocated backup GPT).
        iso_bytes, stick_bytes = a.read(size), b.read(size)
    assert iso_bytes[:440] == stick_bytes[:440]  # the BIOS boot code
    assert iso_bytes[32 << 10 : size - (64 << 9)] == stick_bytes[32 << 10 : size - (64 << 9)]
