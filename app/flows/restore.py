"""Restore: image -> target disk -> options -> summary + typed confirmation -> progress -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.engine import restore_refusal
from app.flows import run_job, run_steps
from app.jobs import Job, plan_restore
from app.jobs_customize import with_customize
from app.screens.customize import CustomizeOptionsScreen
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
                    "Restore 1/4: image", "Which image should go onto the disk?", join=True
                ),
            ),
            (
                "target",
                lambda a: DiskPickScreen(
                    "Restore 2/4: target disk",
                    question=f"Which disk gets {a['image'].name}? Everything on it is overwritten.",
                    check=restore_refusal(a["image"]),
                ),
            ),
            ("options", lambda a: RestoreOptionsScreen("Restore 3/4: options", a.get("options"))),
            ("customize", _customize_step),
            (
                "job",
                lambda a: SummaryScreen("Restore 4/4: check and confirm", lambda: _plan(a)),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])


def _customize_step(a: dict[str, Any]) -> CustomizeOptionsScreen | None:
    """The customize screen, when the options screen asked for it."""
    if not a["options"].get("customize"):
        return None
    return CustomizeOptionsScreen(
        "Restore 3/4: customize this machine", a["image"], a.get("customize") or None
    )


def _plan(a: dict[str, Any]) -> Job:
    options = {k: v for k, v in a["options"].items() if k != "customize"}
    job = plan_restore(a["image"], a["target"], **options)
    if a["options"].get("customize"):
        return with_customize(job, a["image"], a["target"], a["customize"])
    return job
