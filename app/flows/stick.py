"""Make stick: ISO -> stick -> data partition -> summary + typed confirmation -> progress (the
ISO is read back and compared) -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.flows import run_job, run_steps
from app.jobs import STICK_FILESYSTEMS, plan_stick_job
from app.screens.pickers import ChoicePickScreen, DiskPickScreen, IsoPickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def stick_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            ("iso", lambda a: IsoPickScreen("Make stick 1/4: live system")),
            (
                "target",
                lambda a: DiskPickScreen(
                    "Make stick 2/4: the stick",
                    question=f"Which stick gets {a['iso'].name}? Everything on it goes.",
                ),
            ),
            (
                "data_fs",
                lambda a: ChoicePickScreen(
                    "Make stick 3/4: data partition",
                    "The rest of the stick holds images, logs and reports. Which filesystem?",
                    lambda: list(STICK_FILESYSTEMS),
                ),
            ),
            (
                "job",
                lambda a: SummaryScreen(
                    "Make stick 4/4: check and confirm",
                    lambda: plan_stick_job(a["iso"], a["target"], a["data_fs"]),
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
