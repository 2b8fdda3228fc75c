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
        async with app.run_test(size=(100, 30)) as pilot:
            picker = ImagePickScreen("Restore")
            app.push_screen(picker)
            await _until(pilot, lambda: "golden" in _text(app), "the lab's image")
            await pilot.press("n")
            await _until(pilot, lambda: isinstance(app.screen, NetworkShareScreen), "the screen")
            screen = app.screen
            screen.query_one("#protocol").value = "http"
            for field, value in (
                ("server", "127.0.0.1"),
                ("port", str(nginx.port)),
                ("path", "repo"),
            ):
                screen.query_one(f"#{field}").value = value
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
