"""SVG snapshots of the main screens at 80x25 on a recorded machine, and a check that every
screen draws only glyphs the Linux console font has.

Update after an intended change: pytest tests/tui/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import recorded
import textual
from tui_helpers import screen_text, type_text, wait_for, wait_for_screen

from app.glyphs import unsafe_glyphs

SIZE = (80, 25)


@pytest.fixture
def app(make_app: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    recorded.install(monkeypatch)
    monkeypatch.setattr(
        "app.flows.restore.plan_restore", lambda *a, **k: recorded.recorded_restore_job()
    )
    release = threading.Event()
    the_app = make_app()
    the_app.release = release
    yield the_app
    release.set()


async def settle(pilot: Any, needle: str) -> None:
    await wait_for(pilot, lambda: needle in screen_text(pilot.app), timeout=20, what=needle)
    await pilot.pause(0.3)
    text = screen_text(pilot.app)
    assert not unsafe_glyphs(text), f"glyphs the console cannot draw: {unsafe_glyphs(text)}"


async def home(pilot: Any) -> None:
    await settle(pilot, "golden-win11")


async def target_picker(pilot: Any) -> None:
    await home(pilot)
    await pilot.press("r")
    await settle(pilot, "1 image.")
    await pilot.press("enter")
    await settle(pilot, "2 can be chosen")


async def summary(pilot: Any) -> None:
    await target_picker(pilot)
    await pilot.press("enter")
    await wait_for_screen(pilot, "RestoreOptionsScreen")
    await pilot.press("enter")
    # The status line is set once the command, the warning and the confirmation are mounted
    # (waiting for "Command line:" alone snapped a half-built screen on a loaded machine).
    await settle(pilot, "Nothing is written until you confirm")


async def progress(pilot: Any) -> None:
    from app.flows import run_job

    await home(pilot)

    async def flow(a: Any) -> None:
        await run_job(a, recorded.frozen_job(a.release))

    pilot.app.start_flow(flow)
    await settle(pilot, "Remaining 02:27")


async def result(pilot: Any) -> None:
    from app.screens.result import ResultScreen

    await home(pilot)
    pilot.app.push_screen(ResultScreen(recorded.RESULT, "Restore golden-win11 onto nvme0n1"))
    await settle(pilot, "read back and checked")


async def disks(pilot: Any) -> None:
    await home(pilot)
    await pilot.press("d")
    await settle(pilot, "3 disks.")


SCREENS = {
    "home": home,
    "restore_target": target_picker,
    "restore_summary": summary,
    "progress": progress,
    "result": result,
    "disks": disks,
}


# Outside __snapshots__: syrupy counts any file there as an (unused) snapshot and fails the run.
RECORDED_WITH = (Path(__file__).parent / "snapshots-textual-version.txt").read_text().strip()


@pytest.mark.skipif(
    textual.__version__ != RECORDED_WITH,
    reason=f"SVG snapshots were recorded with textual {RECORDED_WITH}, this is "
    f"{textual.__version__}: run --snapshot-update and update tests/tui/snapshots-textual-version.txt "
    "(the text and glyph checks below still run)",
)
@pytest.mark.parametrize("name", list(SCREENS))
def test_snapshot(name: str, app: Any, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=SCREENS[name])


@pytest.mark.parametrize("name", list(SCREENS))
def test_screen_at_80x25_on_any_textual(name: str, app: Any) -> None:
    """What the snapshots show, as text, so a Textual upgrade still checks the screens."""
    import asyncio

    from tui_helpers import screen_text

    async def body() -> str:
        async with app.run_test(size=SIZE) as pilot:
            await SCREENS[name](pilot)
            return screen_text(app)

    text = asyncio.run(body())
    for needle in EXPECTED_80x25[name]:
        assert needle in text, f"{needle!r} not on the {name} screen:\n{text}"


EXPECTED_80x25 = {
    "home": ["What do you want to do?", "This machine", "refused: is the live boot", "F5 Refresh"],
    # A cut cell ends in "..." (issue 13: the console font has no U+2026).
    "restore_target": [
        "Restore 2/4: target disk",
        "REFUSED: is the li...",
        "Enter Choose",
        "16.0 MB  no fs",  # the MSR partition: no filesystem, which "?" did not say
    ],
    "restore_summary": ["EVERYTHING on nvme0n1 will be overwritten.", "--confirm 456X"],
    "progress": ["> Writing p3 (ntfs), 3 of 3", "Done 23.0 GB of 82.0 GB", "Esc Cancel job"],
    "result": ["OK: Restore finished", "Written: 44.0 GB", "Enter Done"],
    "disks": ["Plug a disk in", "3 disks. Watching", "by-id/nvme-Samsung"],
}


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=["serial-80x24", "big-200x60"])
@pytest.mark.parametrize("name", ["home", "restore_target", "restore_summary", "progress"])
def test_other_terminal_sizes(name: str, size: tuple[int, int], app: Any) -> None:
    """A serial console (80x24) and a big terminal: the same screens, nothing important cut."""
    import asyncio

    from tui_helpers import screen_text

    async def body() -> str:
        async with app.run_test(size=size) as pilot:
            await SCREENS[name](pilot)
            return screen_text(app)

    text = asyncio.run(body())
    assert not unsafe_glyphs(text)
    must_show = {
        "home": ["Restore", "Power off", "golden-win11"],
        "restore_target": ["REFUSED", "nvme0n1", "Choose"],
        "restore_summary": ["Command line:", "--confirm 456X", "last 4 characters", "____"],
        "progress": ["> Writing p3 (ntfs), 3 of 3", "Remaining 02:27", "Cancel job"],
    }[name]
    for needle in must_show:
        assert needle in text, f"{needle!r} not visible at {size}:\n{text}"


@pytest.mark.parametrize("size", [(80, 25), (200, 60)], ids=["80x25", "200x60"])
def test_one_unit_system_and_the_model_uncut(size: tuple[int, int], app: Any) -> None:
    """Issue 13 item 4: the same disk has the same size on every screen, in one unit system;
    the Model column uses the width there is; the selected row is reverse video + a mark."""
    import asyncio
    import re

    texts: dict[str, str] = {}

    async def body() -> None:
        async with app.run_test(size=size) as pilot:
            for name in ("home", "restore_target", "restore_summary"):
                await SCREENS[name](pilot)
                texts[name] = screen_text(app)
                if name == "restore_target":
                    table = app.screen.query_one("DiskTable")
                    cursor = table.get_component_styles("datatable--cursor")
                    assert cursor.text_style.reverse  # not colour alone
                    lines = [ln for ln in texts[name].splitlines() if "nvme0n1" in ln]
                    assert lines and lines[0].lstrip(" |").startswith("> nvme0n1"), lines
                    assert not any(
                        ln.lstrip().startswith("> sda") for ln in texts[name].splitlines()
                    )
                    await pilot.press("down")
                    await pilot.pause(0.2)
                    moved = screen_text(app).splitlines()
                    assert any(ln.lstrip().startswith("> sda") for ln in moved), moved
                    await pilot.press("up")
                    await pilot.pause(0.2)
                while type(app.screen).__name__ != "HomeScreen":
                    await pilot.press("escape")
                    await pilot.pause(0.2)

    asyncio.run(body())
    everything = "\n".join(texts.values())
    assert not re.search(r"\d (KiB|MiB|GiB|TiB)\b", everything), everything
    for text in texts.values():
        assert "1.0 TB" in text  # the NVMe disk, the same on Home, the picker and the summary
    if size[0] >= 200:
        assert "Samsung SSD 980 PRO 1TB" in texts["restore_target"]


def test_plan_and_result_lines_break_between_phrases(app: Any) -> None:
    """Issue 13 item 10: at 80 columns no line wraps mid-phrase ("Windows 11 23H2 +" / "Office",
    "1.0" / "TB"); a continuation is indented; a wipe report's path shows without scrolling;
    a long description of a choice wraps under itself, not at the left margin."""
    import asyncio

    from app.jobs import Outcome
    from app.screens.result import ResultScreen

    texts: dict[str, str] = {}

    async def body() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await summary(pilot)
            texts["summary"] = screen_text(app)
            report = Outcome(
                True,
                "Wipe of sdb: erased and checked",
                tuple(f"line {i}: {'word ' * 10}" for i in range(40)),
                report_path="/run/bootmedia/reports/wipe-sdb.txt",
            )
            app.push_screen(ResultScreen(report, "Wipe sdb"))
            await settle(pilot, "OK: Wipe of sdb")
            texts["report"] = screen_text(app)
            app.pop_screen()
            while type(app.screen).__name__ != "HomeScreen":
                await pilot.press("escape")
                await pilot.pause(0.2)
            await pilot.press("p")
            await settle(pilot, "can be chosen")
            await pilot.press("enter")
            await settle(pilot, "can be used here")
            texts["layouts"] = screen_text(app)
            # The highlighted choice in reverse video, not colour alone (issue 13 item 11).
            menu = app.screen.query_one("OptionList")
            styles = menu.get_component_styles("option-list--option-highlighted")
            assert styles.text_style.reverse

    asyncio.run(body())
    lines = [ln.strip(" |│") for ln in texts["summary"].splitlines()]
    assert any("Windows 11 23H2 + Office" in ln or ln.startswith("23H2 + Office") for ln in lines)
    assert not any(ln.rstrip().endswith((" +", " 1.0", "of")) for ln in lines), texts["summary"]
    assert not any(re.match(r"^(TB|GB|MB|Office)\b", ln) for ln in lines), texts["summary"]
    assert "Report saved to /run/bootmedia/reports/wipe-sdb.txt" in texts["report"]
    layouts = texts["layouts"].splitlines()
    assert "Enter Choose" in layouts[-1]  # a list picker says how to go on, as the others do
    first = next(i for i, ln in enumerate(layouts) if "uefi " in ln)
    # "uefi   GPT: ESP 512 MiB FAT32 + Linux root (...)" goes on under its description.
    assert layouts[first + 1].strip(" │")[:1].isalpha()
    assert re.match(r"^│?\s{19,}\S", layouts[first + 1]), layouts[first : first + 2]


def test_border_titles_cut_with_three_dots(app: Any) -> None:
    """The Linux console font has no U+2026: a border title too long for its pane (a job
    title with a 100-character image name) ends in '...' (Textual's own cut drew U+2026)."""
    import asyncio
    import dataclasses

    from app.flows import run_job

    async def body() -> str:
        async with app.run_test(size=SIZE) as pilot:
            await home(pilot)
            job = recorded.frozen_job(app.release)
            note = recorded.recorded_restore_job().work_note
            job = dataclasses.replace(
                job, title=f"Restore {'w' * 100} onto nvme0n1", work_note=note
            )

            async def flow(a: Any) -> None:
                await run_job(a, job)

            app.start_flow(flow)
            await settle(pilot, "Remaining 02:27")
            return screen_text(app)

    text = asyncio.run(body())
    assert "…" not in text
    assert re.search(r"Restore w+\.\.\. ─", text), text
    # The progress total is 3 x the image's data: the screen says why (issue 13 item 10).
    assert re.search(
        r"The total counts the [\d.]+ GB of data 3 times: checked first, written", text
    )


def test_a_network_share_is_named_by_its_url(
    app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Images -> Delete and the image's own screen name a share by its URL, not only by the
    mount point the session put it at."""
    import asyncio

    from app import engine
    from app.engine import ImageRow

    monkeypatch.setattr("bootmedia.net.mount.MOUNT_ROOT", tmp_path)
    (tmp_path / ".smb-lab-images.url").write_text("smb://fileserver/images\n")
    share = ImageRow(tmp_path / "smb-lab-images", recorded.MANIFEST)
    monkeypatch.setattr(engine, "list_images", lambda repos: [share])
    texts: dict[str, str] = {}

    async def body() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await home(pilot)
            await pilot.press("i")
            await settle(pilot, "golden-win11")
            await pilot.press("delete")
            await settle(pilot, "Type its name to confirm")
            texts["delete"] = screen_text(app)
            await pilot.press("escape")
            await wait_for_screen(pilot, "ImagesScreen")
            await pilot.press("enter")
            await settle(pilot, "Command line:")
            texts["info"] = screen_text(app)

    asyncio.run(body())
    flat = " ".join(ln.strip(" │") for ln in texts["delete"].splitlines())
    assert "from smb://fileserver/images, mounted at" in flat, texts["delete"]
    assert "(smb://fileserver/images, mounted at" in texts["info"], texts["info"]


@pytest.mark.parametrize("size", [(80, 25), (80, 24)], ids=["80x25", "80x24"])
def test_network_share_fields_show_what_is_typed(app: Any, size: tuple[int, int]) -> None:
    """The walkthrough found the share form's fields drawn as a bare top border: the app's
    Input border rule beat the form's one-line fields, so what was typed never showed."""
    import asyncio

    async def body() -> str:
        async with app.run_test(size=size) as pilot:
            await home(pilot)
            await pilot.press("r")
            await settle(pilot, "1 image.")
            await pilot.press("n")
            await settle(pilot, "Connect a repository on the network")
            await pilot.press("down")
            await type_text(pilot, "fileserver")
            await pilot.pause(0.3)
            return screen_text(app)

    text = asyncio.run(body())
    server = [ln for ln in text.splitlines() if ln.startswith(" Server")]
    assert server and "fileserver" in server[0], text
    for label in ("Port", "Share / path", "User", "Password"):
        assert any(ln.startswith(f" {label}") for ln in text.splitlines()), text


def test_an_option_and_its_value_stay_on_one_line(app: Any) -> None:
    """At 90 columns the restore's command line broke between "--confirm" and "456X"."""
    import asyncio

    async def body() -> str:
        async with app.run_test(size=(90, 25)) as pilot:
            await summary(pilot)
            return screen_text(app)

    text = asyncio.run(body())
    assert "--confirm 456X" in text, text
    assert not any(ln.rstrip().endswith("--confirm") for ln in text.splitlines()), text
