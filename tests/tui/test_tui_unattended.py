"""An unattended job counts down on screen, can be stopped with Esc, and otherwise runs and
then powers off (or reboots) after the result, as its bootmedia.toml says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import recorded
from tui_helpers import async_test, screen_text, wait_for, wait_for_screen

from bootmedia import unattended


def resolved_job(after: str = "poweroff") -> unattended.ResolvedJob:
    spec = unattended.JobSpec(
        action="restore",
        image="golden-win11",
        target="nvme",
        after=after,
        countdown=2,
        source="/run/bootmedia/data/bootmedia.toml",
    )
    return unattended.ResolvedJob(
        spec=spec, target=recorded.NVME, repo=recorded.REPO, data_dir=None
    )


@pytest.fixture
def live_app(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from app.screens.result import ResultScreen

    runs: list[str] = []
    powered: list[str] = []

    def fake_restore(job: Any, reporter: Any) -> unattended.JobResult:
        runs.append(job.target.path)
        return unattended.JobResult(
            "success", True, "restored and verified", time.time(), time.time()
        )

    monkeypatch.setattr("app.flows.unattended.find_unattended", lambda: resolved_job())
    monkeypatch.setattr(unattended, "run_restore", fake_restore)
    monkeypatch.setattr(ResultScreen, "COUNTDOWN", 1)
    app = make_app()
    app.session.check_unattended = True
    monkeypatch.setattr(app, "power", powered.append)
    app.runs, app.powered = runs, powered
    return app


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_unattended_job_counts_down_runs_and_powers_off(live_app: Any) -> None:
    async with live_app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "CountdownScreen")
        text = screen_text(live_app)
        assert "Restore image golden-win11" in text and "Starting in" in text
        assert "S5GXNF0R123456X" in text  # the exact target disk, by serial
        # Issue 13 item 13: the equivalent command, which the CLI accepts as it is.
        command = (
            "bootmedia apply /run/bootmedia/data/images golden-win11 "
            "/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R123456X "
            "--confirm S5GXNF0R123456X --grow"
        )
        assert "Command line: bootmedia apply" in text
        from app.flows.unattended import unattended_command

        assert unattended_command(resolved_job()) == command
        result = await wait_for_screen(pilot, "ResultScreen", timeout=20)
        assert result.outcome.ok
        await wait_for(
            pilot, lambda: live_app.powered == ["poweroff"], timeout=10, what="power off"
        )
    assert live_app.runs == ["/dev/nvme0n1"]


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_esc_stops_the_unattended_job(live_app: Any) -> None:
    async with live_app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "CountdownScreen")
        await pilot.press("escape")
        await wait_for_screen(pilot, "HomeScreen")
        await pilot.pause(2.5)  # longer than the countdown
        assert type(live_app.screen).__name__ == "HomeScreen"
    assert live_app.runs == [] and live_app.powered == []


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_a_job_that_cannot_run_says_why(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise unattended.UnattendedError("no disk matches target rule 'nvme'. Disks here: sda")

    monkeypatch.setattr("app.flows.unattended.find_unattended", broken)
    app = make_app()
    app.session.check_unattended = True
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "ErrorScreen")
        text = screen_text(app)
        assert "The unattended job cannot run." in text
        assert "no disk matches target rule" in text


@pytest.mark.parametrize(("live", "expected"), [("1", True), ("", False)])
def test_only_the_live_system_looks_for_jobs(
    live: str, expected: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.app import BootmediaApp
    from bootmedia.cli import build_parser

    seen: list[bool] = []
    monkeypatch.setattr(
        BootmediaApp, "run", lambda self: seen.append(self.session.check_unattended)
    )
    monkeypatch.setenv("BOOTMEDIA_LIVE", live)
    args = build_parser().parse_args(["tui"])
    assert args.func(args) == 0
    assert seen == [expected]
