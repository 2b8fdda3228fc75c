"""Issue 10 in the TUI, on the demo lab's loop devices: Clone from Home, and a restore that
leaves the unticked partitions exactly as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tui_helpers import (
    async_test,
    needs_loop,
    screen_text,
    type_text,
    wait_for,
    wait_for_plan,
    wait_for_screen,
)

from app.widgets.toggles import Toggle
from bootmedia.apply import apply_image, plan_apply
from bootmedia.table import read_table

pytestmark = needs_loop


def _disk(lab: Any, name: str) -> str:
    return next(d.path for d in lab.disks() if Path(d.backing_file).name == name)


async def _choose(pilot: Any, path: str) -> None:
    screen = await wait_for_screen(pilot, "DiskPickScreen")
    await wait_for(pilot, lambda: screen.query_one("DiskTable").row_count > 0, what="disk rows")
    table = screen.query_one("DiskTable")
    table.move_cursor(row=list(table.rows_by_key).index(path))
    await pilot.pause()
    await pilot.press("enter")


async def _confirm_and_run(pilot: Any) -> Any:
    summary = await wait_for_plan(pilot, "plan")
    await type_text(pilot, summary.job.confirm.confirm_code)
    await pilot.press("enter")
    return await wait_for_screen(pilot, "ResultScreen", timeout=300)


def _sha(dev: str, start: int, size: int) -> str:
    with open(dev, "rb") as f:
        f.seek(start)
        return hashlib.sha256(f.read(size)).hexdigest()


@async_test
async def test_clone_from_home(demo_lab: Any, make_app: Any) -> None:
    src, dst = _disk(demo_lab, "reference.img"), _disk(demo_lab, "newpc-1.img")
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        assert "Clone" in screen_text(app)
        await pilot.press("k")
        await _choose(pilot, src)
        await _choose(pilot, dst)
        await wait_for_plan(pilot, "clone plan")
        text = screen_text(app)
        assert "Layout:" in text and "bootmedia clone" in text
        result = await _confirm_and_run(pilot)
        assert result.outcome.ok, result.outcome
    got, want = read_table(dst), read_table(src)
    assert got is not None and want is not None and got.id == want.id
    assert [p.uuid for p in got.partitions] == [p.uuid for p in want.partitions]


@async_test
async def test_restore_leaves_unticked_partitions_alone(demo_lab: Any, make_app: Any) -> None:
    dst = _disk(demo_lab, "newpc-1.img")
    apply_image(plan_apply(demo_lab.repo_path, "golden", dst, layout="keep"))
    table = read_table(dst)
    assert table is not None
    first = min(table.partitions, key=lambda p: p.number)
    span = (first.start * table.sector_size, first.size * table.sector_size)
    with open(f"{dst}p{first.number}", "r+b") as f:  # the technician's data since
        f.seek(span[1] - 4096)
        f.write(b"kept" * 1024)
    before = _sha(dst, *span)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        images = await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: images.query_one("ImageTable").row_count, what="images")
        await pilot.press("enter")
        await _choose(pilot, dst)
        choice = await wait_for_screen(pilot, "PartitionChoiceScreen")
        await wait_for(pilot, lambda: bool(choice.query(Toggle)), what="partition toggles")
        toggle = choice.query_one(f"#p{first.number}", Toggle)
        toggle.focus()
        await pilot.press("space")
        assert not toggle.value
        await pilot.press("enter")
        await wait_for_screen(pilot, "RestoreOptionsScreen")
        await pilot.press("enter")
        await wait_for_plan(pilot, "partitions plan")
        assert f"untouched {dst}p{first.number}" in screen_text(app)
        result = await _confirm_and_run(pilot)
        assert result.outcome.ok, result.outcome
    assert _sha(dst, *span) == before, "the unticked partition is byte-identical"
