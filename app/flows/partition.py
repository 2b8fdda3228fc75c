"""Partition: disk -> layout -> summary + typed confirmation -> progress -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.flows import run_job, run_steps
from app.jobs import partition_layouts, plan_partition_job
from app.screens.pickers import ChoicePickScreen, DiskPickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def partition_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            (
                "target",
                lambda a: DiskPickScreen(
                    "Partition 1/3: disk",
                    question="Which disk gets a new partition table? Everything on it goes.",
                ),
            ),
            (
                "layout",
                lambda a: ChoicePickScreen(
                    "Partition 2/3: layout",
                    f"Which layout for {a['target'].disk.name}?",
                    lambda: partition_layouts(a["target"]),
                ),
            ),
            (
                "job",
                lambda a: SummaryScreen(
                    "Partition 3/3: check and confirm",
                    lambda: plan_partition_job(a["target"], a["layout"]),
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
