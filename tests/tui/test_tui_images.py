"""Issue 13 items 8 and 1 (priority): the image picker with a second repository at 80x25, the
details panes with every partition, Enter on Images, repository paths remembered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tui_helpers import (
    async_test,
    footer_cut,
    lines_cut,
    needs_loop,
    screen_text,
    type_text,
    wait_for,
    wait_for_screen,
)

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture

pytestmark = needs_loop

NAME = "netimage-2026-lab"  # longer than the lab's "golden": the column must grow for it


def second_repo(demo_lab: Any, tmp_path: Path) -> Path:
    """A real second repository with a real image captured from the lab's sample disk."""
    repo = tmp_path / "share" / "images"
    capture_image(
        plan_capture(demo_lab.loops["reference.img"], repo, NAME, "from the second repository")
    )
    return repo


@async_test
async def test_image_picker_shows_two_repositories_uncut_at_80x25(
    demo_lab: Any, make_app: Any, tmp_path: Path
) -> None:
    repo = second_repo(demo_lab, tmp_path)
    app = make_app(demo_lab)
    app.session.add_repo(repo)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        screen = await wait_for_screen(pilot, "ImagePickScreen")
        table = screen.query_one("ImageTable")
        await wait_for(pilot, lambda: table.row_count == 2, what="both repositories' images")
        shown = screen_text(app)
        assert not lines_cut(app, f"  {NAME}  ", "> golden", ".../share/images", ".../stick/images")
        assert "Repository" in shown and "Description" in shown, shown
        assert not footer_cut(app), (footer_cut(app), shown)
        assert "^Q Quit" in shown and "j Join multicast" in shown, shown


@async_test
async def test_details_panes_show_every_partition(demo_lab: Any, make_app: Any) -> None:
    """A disk with 20 partitions (real GPT written by sfdisk on a lab disk) and the lab's
    image with 5: every partition is on the screen at 80x25, none wraps or is left off."""
    dev = demo_lab.loops["newpc-1.img"]
    script = "label: gpt\n" + "size=10MiB\n" * 20
    lab.run(["sfdisk", "-q", dev], input=script.encode())
    lab.run(["partx", "-u", dev], check=False)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("d")
        screen = await wait_for_screen(pilot, "DisksScreen")
        table = screen.query_one("DiskTable")
        await wait_for(pilot, lambda: dev in table.rows_by_key, what="newpc-1")
        table.move_cursor(row=table.get_row_index(dev))
        name = Path(dev).name
        await wait_for(pilot, lambda: f"{name}p20" in screen_text(app), what="the 20th partition")
        shown = screen_text(app)
        for n in range(1, 21):
            assert f"{name}p{n} " in shown, (n, shown)
        assert not footer_cut(app), footer_cut(app)
        await pilot.press("escape")
        await pilot.press("i")
        await wait_for_screen(pilot, "ImagesScreen")
        await wait_for(pilot, lambda: "p5 " in screen_text(app), what="the image's partitions")
        assert not lines_cut(
            app, "p1       vfat", "p2       ext4", "p3       ntfs", "p4       swap"
        )


@async_test
async def test_enter_on_images_opens_the_image_and_r_restores_it(
    demo_lab: Any, make_app: Any
) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("i")
        images = await wait_for_screen(pilot, "ImagesScreen")
        await wait_for(pilot, lambda: images.query_one("ImageTable").row_count == 1, what="golden")
        assert "Enter Open" in screen_text(app) and not footer_cut(app)
        await pilot.press("enter")
        await wait_for_screen(pilot, "ImageScreen")
        shown = screen_text(app)
        # The command wraps where the pane ends, inside the path when it is long (pytest's
        # basetemp): compared without the spaces and line ends the wrapping adds.
        flat = "".join("".join(line.strip(" │") for line in shown.splitlines()).split())
        assert f"bootmediainfo{demo_lab.repo_path}golden" in flat, shown
        assert "Command line:" in shown
        assert "Needs a disk of" in shown and "p5 " in shown, shown
        await pilot.press("r")
        picker = await wait_for_screen(pilot, "DiskPickScreen")
        assert picker.title_text == "Restore 2/4: target disk"
        assert "Which disk gets golden?" in screen_text(app)
        await pilot.press("escape")  # back to where the image was chosen
        await wait_for_screen(pilot, "ImagesScreen")
        await pilot.press("enter")
        await wait_for_screen(pilot, "ImageScreen")
        await pilot.press("escape")
        await wait_for_screen(pilot, "ImagesScreen")


@async_test
async def test_a_repository_path_typed_once_is_offered_again(
    demo_lab: Any, make_app: Any, tmp_path: Path
) -> None:
    repo = second_repo(demo_lab, tmp_path)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("i")
        images = await wait_for_screen(pilot, "ImagesScreen")
        table = images.query_one("ImageTable")
        await wait_for(pilot, lambda: table.row_count == 1, what="golden")
        await pilot.press("o")
        await wait_for_screen(pilot, "AskText")
        await type_text(pilot, str(repo))
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 2, what="the typed repository's image")
        await pilot.press("escape")
        await pilot.press("r")  # the restore picker lists it without typing it again
        picker = await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: picker.query_one("ImageTable").row_count == 2, what="both")
        assert NAME in screen_text(app)
        await pilot.press("o")  # and the path dialog starts from it
        ask = await wait_for_screen(pilot, "AskText")
        assert ask.query_one("Input").value == str(repo)


@async_test
async def test_target_picker_says_a_refusal_whole_and_keeps_the_model(
    demo_lab: Any, make_app: Any
) -> None:
    """Newcomer findings at 80x25: the Model column was cut ('reference.im') while Contents
    had room, and the refusal on Enter ran off the one-line status."""
    stick = demo_lab.loops["stick.img"]
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        picker = await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: picker.query_one("ImageTable").row_count == 1, what="golden")
        await pilot.press("enter")
        disks = await wait_for_screen(pilot, "DiskPickScreen")
        table = disks.query_one("DiskTable")
        await wait_for(pilot, lambda: stick in table.rows_by_key, what="the stick")
        assert not lines_cut(app, "reference.img ")
        table.move_cursor(row=table.get_row_index(stick))
        await pilot.press("enter")
        await wait_for(pilot, lambda: "cannot be chosen" in screen_text(app), what="the refusal")
        assert type(app.screen).__name__ == "DiskPickScreen"  # refused: still choosing
        status = str(disks.query_one("#status").render())
        shown = screen_text(app)
        flat = " ".join(" ".join(line.strip(" │") for line in shown.splitlines()).split())
        assert status and " ".join(status.split()) in flat, (status, shown)
        assert "(holds the image repository)" in flat, shown
        assert not footer_cut(app)
