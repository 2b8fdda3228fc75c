"""Screens and widgets without disks: typed confirmation, the cancel dialog, the error screen,
and glyphs the Linux console font can draw. No root needed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from textual.app import App, ComposeResult
from tui_helpers import async_test, screen_text, type_text, wait_for, wait_for_screen

from app import engine
from app.glyphs import unsafe_glyphs
from app.jobs import Job, Outcome
from app.widgets.confirm import ConfirmInput
from app.widgets.progress_view import ProgressView
from bootmedia.disks.model import Disk
from bootmedia.errors import Cancelled
from bootmedia.progress import Progress, Reporter


class ConfirmApp(App[None]):
    """Decides like SummaryScreen: with the engine's rule, for a disk with serial ...7F3A."""

    DISK = Disk(name="sdb", path="/dev/sdb", size=1, serial="WD-WCC6Y7KL7F3A")

    def __init__(self) -> None:
        super().__init__()
        self.confirmed = 0

    def compose(self) -> ComposeResult:
        yield ConfirmInput("7F3A", "Type the last 4 characters of the serial:")

    def on_mount(self) -> None:
        self.query_one(ConfirmInput).focus_input()

    def on_confirm_input_attempt(self, event: ConfirmInput.Attempt) -> None:
        if engine.confirm_matches(self.DISK, event.text):
            event.confirm.accept()
            self.confirmed += 1
        else:
            event.confirm.reject(event.text)


@async_test
async def test_confirmation_needs_the_serial() -> None:
    app = ConfirmApp()
    async with app.run_test(size=(80, 25)) as pilot:
        for wrong in ("7F3", "7F3AX", "A3F7", "sdb", ""):  # sdX never counts: it moves
            await type_text(pilot, wrong)
            await pilot.press("enter")
            await pilot.pause()
        assert app.confirmed == 0
        assert "does not match" in screen_text(app)
        await type_text(pilot, " 7f3a ")  # case and surrounding spaces do not matter
        await pilot.press("enter")
        await pilot.pause()
        assert app.confirmed == 1


def slow_job(started: threading.Event, threads: list[threading.Thread] | None = None) -> Job:
    """A job that runs until cancelled, reporting progress like an engine job."""

    def execute(reporter: Reporter) -> Outcome:
        if threads is not None:
            threads.append(threading.current_thread())
        reporter.add_total(100 << 20)
        with reporter.step("Writing p1 (ext4), 1 of 1"):
            started.set()
            for _ in range(600):
                reporter.check_cancel()
                reporter.advance(64 << 10)
                time.sleep(0.01)
        raise AssertionError("the test should have cancelled the job")

    return Job(
        kind="restore",
        title="Restore golden onto loop9",
        summary=("a plan",),
        command="bootmedia apply REPO golden /dev/loop9 --confirm loop9",
        execute=execute,
        cancel_note="loop9 is marked incomplete: it will not boot until restored again.",
    )


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_cancel_asks_first_then_stops_the_job(make_app: Any) -> None:
    from app.flows import run_job

    started = threading.Event()
    app = make_app()
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")

        async def flow(a: Any) -> None:
            await run_job(a, slow_job(started))

        app.start_flow(flow)
        progress = await wait_for_screen(pilot, "ProgressScreen")
        await wait_for(pilot, started.is_set, what="job start")
        await wait_for(pilot, lambda: "Writing p1" in screen_text(app), what="step shown")
        # Issue 13 item 13: the progress screen shows the job's command line too.
        assert "Command line: bootmedia apply REPO golden /dev/loop9" in screen_text(app)
        await pilot.press("escape")
        await wait_for_screen(pilot, "YesNo")
        assert "marked incomplete" in screen_text(app)
        await pilot.press("n")  # changed their mind: the job goes on
        await wait_for_screen(pilot, "ProgressScreen")
        assert not progress.cancel.is_set()
        await pilot.press("escape")
        await wait_for_screen(pilot, "YesNo")
        await pilot.press("y")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=30)
        assert result.outcome.cancelled and not result.outcome.ok
        assert "CANCELLED" in screen_text(app)


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_jobs_run_off_the_event_loop(make_app: Any) -> None:
    """The UI keeps ticking while a job works: the job runs in a thread worker."""
    from app.flows import run_job

    started = threading.Event()
    threads: list[threading.Thread] = []
    gaps: list[float] = []
    app = make_app()
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")

        async def flow(a: Any) -> None:
            await run_job(a, slow_job(started, threads))

        app.start_flow(flow)
        progress = await wait_for_screen(pilot, "ProgressScreen")
        await wait_for(pilot, started.is_set, what="job start")
        last = time.monotonic()
        for _ in range(40):  # two seconds of UI time while the job works
            await pilot.pause(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        progress.cancel.set()
        await wait_for_screen(pilot, "ResultScreen", timeout=30)
    assert threads and threads[0] is not threading.main_thread()
    # Generous: the machine is shared, but a job on the loop would stall it for seconds.
    assert max(gaps) < 1.0, max(gaps)


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_a_crashing_job_shows_the_error_screen_not_a_traceback(make_app: Any) -> None:
    from app.flows import run_job

    def crash(reporter: Reporter) -> Outcome:
        raise ZeroDivisionError("a bug in a job")

    job = Job("restore", "Restore x", (), "", crash, "")
    app = make_app()
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")

        async def flow(a: Any) -> None:
            await run_job(a, job)

        app.start_flow(flow)
        await wait_for_screen(pilot, "ErrorScreen")
        text = screen_text(app)
        assert "ZeroDivisionError: a bug in a job" in text
        assert str(app.session.log_path)[:40] in text
        assert "Traceback" not in text


@async_test
async def test_bootmedia_errors_are_a_result_not_a_crash(make_app: Any) -> None:
    def refuse(reporter: Reporter) -> Outcome:
        raise Cancelled("cancelled by the user")

    outcome = Job("capture", "Capture", (), "", refuse, "No image is listed.").run(Reporter())
    assert outcome.cancelled and "No image is listed." in outcome.lines


class ProgressApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ProgressView()


@async_test
async def test_progress_view_draws_only_console_glyphs() -> None:
    app = ProgressApp()
    async with app.run_test(size=(80, 25)) as pilot:
        view = app.query_one(ProgressView)
        for i in range(1, 40):
            view.progress = Progress(
                step="Writing p2 (ext4), 2 of 3",
                done=i << 20,
                total=40 << 20,
                rate=float((i % 7 + 1) << 20),
                eta=40.0 - i,
                elapsed=float(i),
                steps=(
                    "Checking the image",
                    "Writing p1 (vfat), 1 of 3",
                    "Writing p2 (ext4), 2 of 3",
                ),
            )
        await pilot.pause()
        text = screen_text(app)
        assert "> Writing p2 (ext4), 2 of 3" in text
        assert "Done 40.9 MB of 41.9 MB" in text
        assert "█" in text  # the bar and the sparkline are drawn
        assert not unsafe_glyphs(text), unsafe_glyphs(text)


# The home screen lists this machine's disks (blkid -p, read-only): real tools.
@pytest.mark.real_tools
@async_test
async def test_home_screen_keys_and_glyphs(make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        await pilot.pause(0.5)
        text = screen_text(app)
        for label in ("Restore", "Capture", "Wipe", "Partition", "Verify", "Images", "Disks"):
            assert label in text
        assert not unsafe_glyphs(text), unsafe_glyphs(text)
        await pilot.press("l")
        await wait_for_screen(pilot, "LogScreen")
        await pilot.press("escape")
        await wait_for_screen(pilot, "HomeScreen")
