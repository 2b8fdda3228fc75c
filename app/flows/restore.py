"""Restore: image -> target disk -> options -> summary + typed confirmation -> progress -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.flows import run_job, run_steps
from app.jobs import plan_restore
from app.screens.forms import RestoreOptionsScreen
from app.screens.pickers import DiskPickScreen, ImagePickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def restore_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            (
                "image",
                lambda a: ImagePickScreen(
                    "Restore 1/4: image", "Which image should go onto the disk?"
                ),
            ),
            (
                "target",
                lambda a: DiskPickScreen(
                    "Restore 2/4: target disk",
                    question=f"Which disk gets {a['image'].name}? Everything on it is overwritten.",
                ),
            ),
            ("options", lambda a: RestoreOptionsScreen("Restore 3/4: options", a.get("options"))),
            (
                "job",
                lambda a: SummaryScreen(
                    "Restore 4/4: check and confirm",
                    lambda: plan_restore(a["image"], a["target"], **a["options"]),
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
