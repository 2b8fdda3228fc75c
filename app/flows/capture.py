"""Capture: source disk -> repository -> name/description/level -> summary -> progress -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.engine import capture_refusal
from app.flows import run_job, run_steps
from app.jobs import plan_capture_job
from app.screens.forms import CaptureFormScreen
from app.screens.pickers import DiskPickScreen, RepoPickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def capture_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            (
                "source",
                lambda a: DiskPickScreen(
                    "Capture 1/4: source disk",
                    for_write=False,
                    question="Which disk should be captured?",
                    check=capture_refusal,
                ),
            ),
            ("repo", lambda a: RepoPickScreen("Capture 2/4: repository")),
            (
                "form",
                lambda a: CaptureFormScreen("Capture 3/4: name", a["source"].disk, a["repo"]),
            ),
            (
                "job",
                lambda a: SummaryScreen(
                    "Capture 4/4: check and start",
                    lambda: plan_capture_job(a["source"], a["repo"], **a["form"]),
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
