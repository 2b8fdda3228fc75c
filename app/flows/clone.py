"""Clone: source disk -> target disk -> summary (every partition's new place) + typed
confirmation -> progress -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.flows import run_job, run_steps
from app.jobs_clone import plan_clone_job
from app.screens.pickers import DiskPickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def clone_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            (
                "source",
                lambda a: DiskPickScreen(
                    "Clone 1/3: source disk",
                    for_write=False,
                    question="Which disk should be copied? It is only read.",
                ),
            ),
            (
                "target",
                lambda a: DiskPickScreen(
                    "Clone 2/3: target disk",
                    question=f"Which disk gets a copy of {a['source'].disk.name}? Everything on "
                    "it is overwritten; a smaller disk works when the data fits.",
                ),
            ),
            (
                "job",
                lambda a: SummaryScreen(
                    "Clone 3/3: check and confirm",
                    lambda: plan_clone_job(a["source"], a["target"]),
                ),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])
