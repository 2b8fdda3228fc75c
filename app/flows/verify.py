"""Verify: image -> summary -> progress -> intact, or exactly what is damaged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.flows import run_job, run_steps
from app.jobs import plan_verify
from app.screens.pickers import ImagePickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def verify_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            (
                "image",
                lambda a: ImagePickScreen("Verify 1/2: image", "Which image should be checked?"),
            ),
            (
                "job",
                lambda a: SummaryScreen(
                    "Verify 2/2: start", lambda: plan_verify(a["image"].repo, a["image"])
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
