"""The restore wizard's customize step: asked for on the options screen, a preview that follows
each key (this machine's name, each OS's verdict), refusals before the summary, and the summary
and command line carrying the customize options. The restore then runs for real on the lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_tui_restore import lab_disk, pick_target
from tui_helpers import async_test, needs_loop, screen_text, type_text, wait_for, wait_for_screen

from app.engine import ImageRow
from app.screens.customize import preview
from bootmedia.customize import Machine

pytestmark = needs_loop
MACHINE = Machine(serial="SN-77", macs=("52:54:00:00:00:07",))


@async_test
async def test_customize_step_preview_and_summary(demo_lab: Any, make_app: Any) -> None:
    target = lab_disk(demo_lab, "newpc-1.img")
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        await wait_for_screen(pilot, "ImagePickScreen")
        await pick_target(pilot, target)
        await pilot.press("enter")
        await wait_for_screen(pilot, "RestoreOptionsScreen")
        # grow, verify, check first, [x] customize
        await pilot.press("down", "down", "down", "space", "enter")
        screen = await wait_for_screen(pilot, "CustomizeOptionsScreen")
        screen.machine = MACHINE
        await type_text(pilot, "pc_{serial}")
        await wait_for(pilot, lambda: "REFUSED" in screen_text(app), what="refusal")
        text = screen_text(app)
        assert "Name: 'pc_SN-77'" in text
        assert "Linux: REFUSED" in text and "Windows: REFUSED" in text  # the lab has both
        await pilot.press("ctrl+n")
        await pilot.pause(0.3)
        assert app.screen is screen  # a refused name does not go on
        for _ in range(len("pc_{serial}")):
            await pilot.press("backspace")
        await type_text(pilot, "pc-{serial}")
        await wait_for(pilot, lambda: "Name: 'pc-SN-77'" in screen_text(app), what="preview")
        assert "Linux: OK" in screen_text(app) and "Windows: OK" in screen_text(app)
        await pilot.press("ctrl+n")
        summary = await wait_for_screen(pilot, "SummaryScreen")
        await wait_for(pilot, lambda: summary.job is not None, what="plan")
        assert "Then, on the restored disk" in "\n".join(summary.job.summary)
        assert "--hostname 'pc-{serial}'" in summary.job.command
        # Back from the summary lands on the customize step, with what was typed.
        await pilot.press("escape")
        back = await wait_for_screen(pilot, "CustomizeOptionsScreen")
        assert back.query_one("#hostname").value == "pc-{serial}"


def test_preview_counter_and_csv(demo_lab: Any, tmp_path: Path) -> None:
    from bootmedia.repo.store import Repository

    repo = demo_lab.repo_path
    with Repository.open(repo) as r:
        image = ImageRow(repo, r.image("golden"))
    fields = {
        "hostname": "lab-{n:03}",
        "names_csv": "",
        "reset_machine_id": True,
        "new_ssh_keys": True,
        "boot_entry": True,
        "add_fallback": False,
    }
    lines = preview(image, fields, MACHINE)
    assert "Name: 'lab-001' ({n} = 1, the next free number)" in lines
    assert "UEFI: a boot entry for the disk's loader, first in BootOrder" in lines
    csv = tmp_path / "names.csv"
    csv.write_text("SN-77,front-desk\n")
    lines = preview(image, {**fields, "hostname": "", "names_csv": str(csv)}, MACHINE)
    assert "Name: 'front-desk'" in lines
    lines = preview(image, {**fields, "hostname": "", "names_csv": str(tmp_path / "no")}, MACHINE)
    assert any("no such names CSV" in ln for ln in lines)
