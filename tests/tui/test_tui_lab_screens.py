"""The Disks and Images screens on the real lab: hotplug highlighting, delete with confirmation."""

from __future__ import annotations

from typing import Any

from tui_helpers import async_test, needs_loop, screen_text, type_text, wait_for, wait_for_screen

from bootmedia.repo.store import Repository

pytestmark = needs_loop


@async_test
async def test_disks_screen_highlights_a_plugged_in_disk(demo_lab: Any, make_app: Any) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("d")
        screen = await wait_for_screen(pilot, "DisksScreen")
        table = screen.query_one("DiskTable")
        await wait_for(pilot, lambda: table.row_count == 4, what="the lab's 4 disks")
        await pilot.press("a")  # the lab's stand-in for plugging a USB disk in
        await wait_for(pilot, lambda: table.row_count == 5, timeout=20, what="the new disk")
        new = demo_lab.loops["usb-1.img"]
        assert new in screen.fresh  # highlighted for a few seconds
        text = screen_text(app)
        assert "usb-1.img" in text
        # Said on the status line, whole, not in a toast drawn over the borders and the footer.
        assert not app.query("Toast") and not app._notifications
        status = [ln for ln in text.splitlines() if "New disk:" in ln]
        assert status and status[0].startswith(" New disk: loop device"), text
        assert text.splitlines()[-2].startswith(" ") and " disks. Watching" in text.splitlines()[-2]
        await wait_for(pilot, lambda: new not in screen.fresh, timeout=15, what="highlight ends")


@async_test
async def test_images_screen_deletes_only_after_the_name_is_typed(
    demo_lab: Any, make_app: Any
) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("i")
        screen = await wait_for_screen(pilot, "ImagesScreen")
        await wait_for(pilot, lambda: screen.query_one("ImageTable").row_count == 1, what="golden")
        await pilot.press("delete")
        await wait_for_screen(pilot, "AskText")
        # Issue 13 item 13: Delete shows its CLI command too.
        assert app.screen.note == f"Command line: bootmedia delete {demo_lab.repo_path} golden"
        assert "Command line: bootmedia delete" in screen_text(app)
        await type_text(pilot, "gold")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Not deleted" in screen_text(app), what="refusal")
        with Repository.open(demo_lab.repo_path) as r:
            assert [m.name for m in r.images()] == ["golden"]
        await pilot.press("delete")
        await wait_for_screen(pilot, "AskText")
        await type_text(pilot, "golden")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Deleted golden" in screen_text(app), what="deleted")
    with Repository.open(demo_lab.repo_path) as r:
        assert r.images() == []


@async_test
async def test_images_screen_verifies_the_highlighted_image(demo_lab: Any, make_app: Any) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("i")
        screen = await wait_for_screen(pilot, "ImagesScreen")
        await wait_for(pilot, lambda: screen.query_one("ImageTable").row_count == 1, what="golden")
        await pilot.press("v")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=120)
        assert result.outcome.ok
        assert "Intact: image golden" in screen_text(app)
        await pilot.press("enter")
        await wait_for_screen(pilot, "ImagesScreen")  # back where the technician was
