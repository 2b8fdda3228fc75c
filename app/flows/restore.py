"""Restore: image -> target disk -> options -> summary + typed confirmation -> progress -> result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.engine import ImageRow, restore_refusal
from app.flows import Step, run_job, run_steps
from app.jobs import Job, plan_restore
from app.jobs_clone import matching_partitions, plan_partitions_job
from app.jobs_customize import with_customize
from app.screens.customize import CustomizeOptionsScreen
from app.screens.forms import RestoreOptionsScreen
from app.screens.partition_choice import PartitionChoiceScreen
from app.screens.pickers import DiskPickScreen, ImagePickScreen
from app.screens.summary import SummaryScreen

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def restore_flow(app: BootmediaApp, image: ImageRow | None = None) -> None:
    """The restore wizard; with `image` (Images -> Enter -> r) it starts at the target disk,
    and Esc there goes back to where the image was chosen."""
    first: list[Step] = [
        (
            "image",
            lambda a: ImagePickScreen(
                "Restore 1/4: image", "Which image should go onto the disk?", join=True
            ),
        )
    ]
    answers = await run_steps(
        app,
        [
            *([] if image else first),
            (
                "target",
                lambda a: DiskPickScreen(
                    "Restore 2/4: target disk",
                    question=f"Which disk gets {a['image'].name}? Everything on it is overwritten.",
                    check=restore_refusal(a["image"]),
                ),
            ),
            ("choose", _choose_step),
            ("options", lambda a: RestoreOptionsScreen("Restore 3/4: options", a.get("options"))),
            ("customize", _customize_step),
            (
                "job",
                lambda a: SummaryScreen("Restore 4/4: check and confirm", lambda: _plan(a)),
            ),
        ],
        {"image": image} if image else None,
    )
    if answers is not None:
        await run_job(app, answers["job"])


def _choose_step(a: dict[str, Any]) -> PartitionChoiceScreen | None:
    """Untick partitions, when the target's table matches the image's. Once it found nothing
    to choose for this image and disk, the step is skipped (also when going back)."""
    pair = (a["image"].key, a["target"].key)
    if a.get("no_choice") == pair:
        return None

    def nothing() -> None:
        a["no_choice"] = pair

    return PartitionChoiceScreen(
        "Restore 2/4: partitions", lambda: matching_partitions(a["image"], a["target"]), nothing
    )


def _customize_step(a: dict[str, Any]) -> CustomizeOptionsScreen | None:
    """The customize screen, when the options screen asked for it."""
    if not a["options"].get("customize"):
        return None
    return CustomizeOptionsScreen(
        "Restore 3/4: customize this machine", a["image"], a.get("customize") or None
    )


def _plan(a: dict[str, Any]) -> Job:
    options = {k: v for k, v in a["options"].items() if k != "customize"}
    chosen = (a.get("choose") or {}).get("partitions")
    if chosen:
        return plan_partitions_job(
            a["image"],
            a["target"],
            chosen,
            verify=options["verify"],
            afterwards=options["afterwards"],
        )
    job = plan_restore(a["image"], a["target"], **options)
    if a["options"].get("customize"):
        return with_customize(job, a["image"], a["target"], a["customize"])
    return job
