"""Issue 13 item 5: refuse early. A too-small target and a source mounted read-write are greyed
out in the picker with the reason; a duplicate image name is rejected on the name form; a plan
that cannot be done offers no Enter."""

from __future__ import annotations

from typing import Any

from tui_helpers import (
    async_test,
    needs_loop,
    pick_choice,
    screen_text,
    type_text,
    wait_for,
    wait_for_screen,
)

from bootmedia import lab

pytestmark = needs_loop
MiB = 1 << 20


async def disk_picker(pilot: Any, rows: int) -> Any:
    picker = await wait_for_screen(pilot, "DiskPickScreen")
    table = picker.query_one("DiskTable")
    await wait_for(pilot, lambda: table.row_count == rows, what=f"{rows} disks")
    return table


@async_test
async def test_a_too_small_target_is_greyed_out_with_the_reason(
    demo_lab: Any, make_app: Any
) -> None:
    tiny = demo_lab.attach(lab.make_file(demo_lab.disk_dir / "tiny.img", 24 * MiB))
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: "golden" in screen_text(app), what="images")
        await pilot.press("enter")
        table = await disk_picker(pilot, 5)
        refusal = table.rows_by_key[tiny].refusal or ""
        assert refusal.startswith("too small"), refusal
        assert "REFUSED: too small" in screen_text(app)
        assert table.rows_by_key[demo_lab.loops["newpc-1.img"]].refusal is None
        table.move_cursor(row=list(table.rows_by_key).index(tiny))
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "DiskPickScreen"  # cannot be chosen
        assert "cannot be chosen" in screen_text(app)


@async_test
async def test_capture_greys_out_a_source_mounted_read_write_and_a_taken_name(
    demo_lab: Any, make_app: Any
) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("c")
        table = await disk_picker(pilot, 4)
        stick = table.rows_by_key[demo_lab.loops["stick.img"]]
        assert "mounted read-write" in (stick.refusal or "")
        table.move_cursor(row=list(table.rows_by_key).index(demo_lab.loops["reference.img"]))
        await pilot.press("enter")
        repos = await wait_for_screen(pilot, "RepoPickScreen")
        await wait_for(pilot, lambda: repos.query_one("OptionList").option_count > 0, what="repo")
        await pilot.press("enter")
        form = await wait_for_screen(pilot, "CaptureFormScreen")
        await wait_for(pilot, lambda: "golden" in form.taken, what="names in the repository")
        form.query_one("#name").value = ""
        await type_text(pilot, "golden")
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
        assert app.screen is form  # rejected on the form, not three steps later
        assert "golden is already in this repository" in screen_text(app)


@async_test
async def test_cannot_do_this_offers_no_enter(demo_lab: Any, make_app: Any) -> None:
    not_an_iso = demo_lab.root / "notes.iso"
    not_an_iso.write_bytes(b"not an ISO 9660 image" * 4096)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("m")
        await wait_for_screen(pilot, "IsoPickScreen")
        await pilot.press("n")
        await wait_for_screen(pilot, "AskText")
        await type_text(pilot, str(not_an_iso))
        await pilot.press("enter")
        table = await disk_picker(pilot, 4)
        table.move_cursor(row=list(table.rows_by_key).index(demo_lab.loops["newpc-1.img"]))
        await pilot.press("enter")
        await pick_choice(pilot, "ext4", what="data filesystems")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Cannot do this" in screen_text(app), what="refusal")
        text = screen_text(app)
        assert "not an ISO 9660 image" in text
        footer = text.rstrip().splitlines()[-1]
        assert "Esc Back" in footer and "Enter" not in footer, footer


@async_test
async def test_check_first_is_offered_and_on_by_default(demo_lab: Any, make_app: Any) -> None:
    """Issue 13 item 8: the restore options offer --check-first, on by default."""
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: "golden" in screen_text(app), what="images")
        await pilot.press("enter")
        await disk_picker(pilot, 4)
        await pilot.press("enter")
        options = await wait_for_screen(pilot, "RestoreOptionsScreen")
        assert "[x] Check the image before writing" in screen_text(app)
        assert options.query_one("#check_first").value
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: getattr(app.screen, "job", None) is not None,
            what="the plan",
        )
        assert "--check-first" in app.screen.job.command
