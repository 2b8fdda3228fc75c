"""The demo lab without root: plain image files as disks, driven through the real app.

The lab is built with files=True, which is what a user who is not root gets; these tests run as
any user (no loop device, no mount). test_demo_nonroot.py runs the lab as a real unprivileged
user."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import (
    async_test,
    pick_choice,
    screen_text,
    sparse_copy,
    type_text,
    wait_for,
    wait_for_plan,
    wait_for_screen,
)

from app import engine
from app.session import Session
from bootmedia import demo, lab
from bootmedia.disks.files import file_disk
from bootmedia.repo.store import Repository

pytestmark = pytest.mark.real_tools  # sfdisk, mkfs and mtools on image files, no loop device


@pytest.fixture(scope="module")
def files_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files-lab") / "lab"
    demo.create_lab(root, say=None, files=True).close()
    return root


@pytest.fixture
def files_lab(files_template: Path, tmp_path: Path) -> Iterator[Any]:
    root = tmp_path / "lab"
    shutil.copytree(files_template, root, copy_function=sparse_copy)
    the_lab = demo.create_lab(root, say=None, files=True)
    try:
        yield the_lab
    finally:
        the_lab.close()


def checksums(image: Path) -> dict[int, dict[str, str]]:
    return {
        p.number: lab.file_checksums_at(image, p.start, p.size, p.fstype)
        for p in file_disk(image).partitions
        if p.fstype in ("vfat", "ext4", "ntfs")
    }


async def choose_disk(pilot: Any, path: Path) -> Any:
    screen = await wait_for_screen(pilot, "DiskPickScreen")
    await wait_for(pilot, lambda: screen.query_one("DiskTable").row_count > 0, what="disk rows")
    table = screen.query_one("DiskTable")
    table.move_cursor(row=list(table.rows_by_key).index(str(path)))
    await pilot.pause()
    return screen


def test_the_file_lab_shows_its_image_files(files_lab: Any, tmp_path: Path) -> None:
    session = Session(log_path=tmp_path / "log", lab=files_lab)
    rows = engine.list_disks(session)
    assert [r.disk.name for r in rows] == ["newpc-1.img", "newpc-2.img", "reference.img"]
    assert {(r.bus, r.title, r.refusal) for r in rows} == {("image file", "image file", None)}
    assert rows[0].confirm_code == rows[0].serial[-4:]  # the lab gives its disks serials
    assert engine.find_repositories(session) == [files_lab.root / "repository"]
    assert [i.name for i in engine.list_images([files_lab.repo_path])] == ["golden"]
    added = files_lab.add_disk()
    assert added.transport == "file" and added.name == "usb-1.img"


@async_test
async def test_restore_golden_onto_a_blank_file(files_lab: Any, make_app: Any) -> None:
    target = files_lab.disk_dir / "newpc-1.img"
    app = make_app(files_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        images = await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: images.query_one("ImageTable").row_count, what="images")
        await pilot.press("enter")
        await choose_disk(pilot, target)
        assert "image file" in screen_text(app)
        await pilot.press("enter")
        await wait_for_screen(pilot, "RestoreOptionsScreen")
        await pilot.press("enter")
        summary = await wait_for_plan(pilot, "restore plan")
        assert "newpc-1.img" in screen_text(app)
        await type_text(pilot, "newpc-2.img")  # another disk's name writes nothing
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.screen is summary and file_disk(target).partitions == ()
        summary.query_one("ConfirmInput").value = ""
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=180)
        assert result.outcome.ok, result.outcome
        assert "read back and checked" in screen_text(app)
    want = checksums(files_lab.disk_dir / "reference.img")
    assert sorted(want) == [1, 2, 3] and all(want.values())
    assert checksums(target) == want


@async_test
async def test_capture_wipe_and_partition_files(files_lab: Any, make_app: Any) -> None:
    reference = files_lab.disk_dir / "reference.img"
    blank = files_lab.disk_dir / "newpc-2.img"
    app = make_app(files_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        # Capture the reference file into the lab's repository.
        await pilot.press("c")
        await choose_disk(pilot, reference)
        await pilot.press("enter")
        repos = await wait_for_screen(pilot, "RepoPickScreen")
        await wait_for(pilot, lambda: repos.query_one("OptionList").option_count > 0)
        await pilot.press("enter")
        form = await wait_for_screen(pilot, "CaptureFormScreen")
        form.query_one("#name").value = ""
        await type_text(pilot, "again")
        await pilot.press("tab", "tab", "enter")
        await wait_for_plan(pilot, "capture plan")
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=180)
        assert result.outcome.ok, result.outcome
        await pilot.press("enter")
        await wait_for_screen(pilot, "HomeScreen")
        # Partition the blank file with the uefi layout.
        await pilot.press("p")
        await choose_disk(pilot, blank)
        await pilot.press("enter")
        menu = await pick_choice(pilot, "uefi", what="layouts")
        await pilot.press("enter")
        await wait_for_plan(pilot, "partition plan")
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=120)
        assert result.outcome.ok, result.outcome
        await pilot.press("enter")
        await wait_for_screen(pilot, "HomeScreen")
        assert [(p.fstype, p.label) for p in file_disk(blank).partitions] == [
            ("vfat", "ESP"),
            ("ext4", "root"),
        ]
        # Wipe it again (quick): only what makes sense for a file is offered.
        await pilot.press("w")
        await choose_disk(pilot, blank)
        await pilot.press("enter")
        menu = await pick_choice(pilot, "quick", what="methods")
        assert menu.get_option("discard").disabled and menu.get_option("nvme-format").disabled
        assert "an image file, not a device" in screen_text(app)
        await pilot.press("enter")
        await wait_for_plan(pilot, "wipe plan")
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=120)
        assert result.outcome.ok, result.outcome
        assert Path(result.outcome.report_path).is_file()
    assert file_disk(blank).partitions == ()
    with Repository.open(files_lab.repo_path) as r:
        again, golden = r.image("again"), r.image("golden")
    assert again.digest == golden.digest  # the same disk gives the same image
