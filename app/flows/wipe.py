"""Wipe: disk -> method (only what the device supports) -> summary + typed confirmation ->
progress -> result with the report and where it was saved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.flows import run_job, run_steps
from app.jobs import plan_wipe_job, wipe_methods
from app.screens.pickers import ChoicePickScreen, DiskPickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def wipe_flow(app: BootmediaApp) -> None:
    report_dir = app.session.report_dir
    answers = await run_steps(
        app,
        [
            (
                "target",
                lambda a: DiskPickScreen(
                    "Wipe 1/3: disk", question="Which disk should be erased? Everything on it goes."
                ),
            ),
            (
                "method",
                lambda a: ChoicePickScreen(
                    "Wipe 2/3: method",
                    f"How should {a['target'].disk.name} be erased?",
                    lambda: wipe_methods(a["target"]),
                ),
            ),
            (
                "job",
                lambda a: SummaryScreen(
                    "Wipe 3/3: check and confirm",
                    lambda: plan_wipe_job(a["target"], a["method"], report_dir),
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
