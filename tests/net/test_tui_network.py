"""The TUI's Network share screen against a real nginx in a namespace: the share's images show
in the image picker next to the stick's (the demo lab's), with a repository column."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture
from bootmedia.net import mount
from tests import sample
from tests.net.netns import Netns
from tests.net.servers import Nginx

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20


def _text(app: Any) -> str:
    import io

    from rich.console import Console

    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(),
                      record=True, color_system=None, legacy_windows=False)  # fmt: skip
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def _until(pilot: Any, cond: Any, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out: {what}\n{_text(pilot.app)}")
        await pilot.pause(0.05)


def test_network_share_screen_connects_http_and_lists_its_images(
    netns: Netns, nginx: Nginx, served: Path, loopdev, tmp_path: Path, monkeypatch
) -> None:
    from textual.widgets import Input, Select

    from app.app import BootmediaApp
    from app.screens.network import NetworkShareScreen
    from app.screens.pickers import ImagePickScreen
    from app.session import Session
    from bootmedia.demo import create_lab

    monkeypatch.setattr(mount, "MOUNT_ROOT", tmp_path / "mnt")
    src = loopdev(96 * MiB)
    sample.build(src, "gpt", layout=(lab.SamplePart(1, "ext4", 0),))
    capture_image(plan_capture(src, served / "repo", "netimage", "from the share"))
    the_lab = create_lab(tmp_path / "lab", say=None)
    log = tmp_path / "bootmedia.log"
    log.touch()

    async def body() -> None:
        app = BootmediaApp(Session(log_path=log, lab=the_lab))
        async with app.run_test(size=(80, 25)) as pilot:  # nothing cut at 80 columns
            picker = ImagePickScreen("Restore")
            app.push_screen(picker)
            await _until(pilot, lambda: "golden" in _text(app), "the lab's image")
            await pilot.press("n")
            await _until(pilot, lambda: isinstance(app.screen, NetworkShareScreen), "the screen")
            screen = app.screen
            screen.query_one("#protocol", Select).value = "http"
            for field, value in (
                ("server", "127.0.0.1"),
                ("port", str(nginx.port)),
                ("path", "repo"),
            ):
                screen.query_one(f"#{field}", Input).value = value
            await pilot.pause(0.1)
            shown = _text(app)
            assert f"bootmedia images {nginx.url('repo')}" in shown, shown
            await pilot.press("ctrl+o")
            await _until(
                pilot, lambda: app.screen is picker and "netimage" in _text(app), "share images"
            )
            shown = _text(app)
            assert "golden" in shown and "Repository" in shown, shown
            assert f"127.0.0.1:{nginx.port}/repo" in shown, shown

    try:
        with netns.entered():
            asyncio.run(body())
    finally:
        the_lab.close()


def test_join_a_multicast_session_from_the_restore_wizard(loopdev, tmp_path: Path) -> None:
    """Restore -> j (Join multicast) -> session settings -> target -> typed confirmation: the
    lab's golden image arrives from a real udp-sender in another namespace, and is verified."""
    import subprocess
    import sys

    from textual.widgets import Input

    from app.app import BootmediaApp
    from app.screens.network import JoinCastScreen
    from app.screens.result import ResultScreen
    from app.screens.summary import SummaryScreen
    from app.session import Session
    from app.widgets.tables import DiskTable
    from bootmedia.demo import create_lab
    from tests.net.conftest import WHY_NOT
    from tests.net.netns import Lan

    if WHY_NOT:
        pytest.skip(WHY_NOT)
    the_lab = create_lab(tmp_path / "lab", say=None)
    net = Lan()
    log = tmp_path / "bootmedia.log"
    log.touch()
    root = Path(__file__).resolve().parents[2]
    try:
        sender, here = net.add(1), net.add(11)
        cast = subprocess.Popen(
            sender.cmd(sys.executable, "-m", "bootmedia", "--log-dir", str(tmp_path), "cast",
                       str(the_lab.repo_path), "golden", "--receivers", "1", "--wait", "300",
                       "--interface", "eth0", "--rdv", "239.77.0.1", "-q"),
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        target = the_lab.loops["newpc-1.img"]

        async def body() -> None:
            app = BootmediaApp(Session(log_path=log, lab=the_lab))
            async with app.run_test(size=(80, 25)) as pilot:
                await pilot.press("r")
                await _until(
                    pilot, lambda: type(app.screen).__name__ == "ImagePickScreen", "picker"
                )
                await _until(pilot, lambda: "j Join multicast" in _text(app), "the j binding")
                await pilot.press("j")
                await _until(pilot, lambda: isinstance(app.screen, JoinCastScreen), "join screen")
                screen = app.screen
                screen.query_one("#rdv", Input).value = "239.77.0.1"
                screen.query_one("#interface", Input).value = "eth0"
                await pilot.press("ctrl+o")
                await _until(pilot, lambda: type(app.screen).__name__ == "DiskPickScreen", "disks")
                table = app.screen.query_one(DiskTable)
                await _until(pilot, lambda: table.row_count > 0, "disk rows")
                table.move_cursor(row=list(table.rows_by_key).index(target))
                await pilot.pause()
                await pilot.press("enter")
                await _until(
                    pilot,
                    lambda: isinstance(app.screen, SummaryScreen) and app.screen.job is not None,
                    "summary",
                )
                summary = app.screen
                assert isinstance(summary, SummaryScreen) and summary.job is not None
                shown = _text(app)
                assert "bootmedia receive" in shown and "239.77.0.1" in shown, shown
                assert summary.job.confirm is not None
                for ch in summary.job.confirm.confirm_code:
                    await pilot.press(ch)
                await pilot.press("enter")
                await _until(pilot, lambda: isinstance(app.screen, ResultScreen), "result", 300)
                result = app.screen
                assert isinstance(result, ResultScreen) and result.outcome.ok, result
                await _until(pilot, lambda: "read back and checked" in _text(app), "its text")

        with here.entered():
            asyncio.run(body())
        out, err = cast.communicate(timeout=120)
        assert cast.returncode == 0, err
        assert "10.77.0.11" in out
        lab.run(["partx", "-u", target], check=False)
        assert lab.file_checksums(f"{target}p2", "ext4") == lab.file_checksums(
            f"{the_lab.loops['reference.img']}p2", "ext4"
        )
    finally:
        if cast.poll() is None:
            cast.kill()
        net.close()
        the_lab.close()
