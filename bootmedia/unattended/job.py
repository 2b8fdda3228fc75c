"""Carrying out an unattended plan: the restore, with no prompt, and what ends the run."""

from __future__ import annotations

import logging
import time

from bootmedia.apply import apply_image, plan_apply
from bootmedia.customize.unattended import prepare_customize, run_customize
from bootmedia.errors import BootmediaError, Cancelled
from bootmedia.net.mount import label
from bootmedia.progress import Reporter
from bootmedia.unattended.plan import UnattendedPlan
from bootmedia.unattended.results import JobResult

log = logging.getLogger("bootmedia.unattended")


def run_restore(job: UnattendedPlan, reporter: Reporter) -> JobResult:
    """Restore the image onto the target with the engine, with no prompt. Never raises for a
    failed job: the failure becomes the result, because it must reach the data partition."""
    started = time.time()
    if job.spec.action == "receive":
        return _run_receive(job, reporter, started)
    try:
        plan = plan_apply(
            job.repo, job.spec.image, job.target.path, grow=job.spec.grow, verify=job.spec.verify
        )
        custom = None
        if job.spec.customize is not None:  # checked before the first write, like the rest
            custom = prepare_customize(job.spec.customize, job.repo, job.data_dir, plan.image)
        outcome = apply_image(plan, reporter)
    except Cancelled as exc:
        return JobResult("cancelled", False, str(exc), started, time.time())
    except BootmediaError as exc:
        return JobResult("failed", False, str(exc), started, time.time())
    except Exception as exc:  # a bug; still a result on the stick, not a silent machine
        log.exception("unattended restore failed")
        return JobResult("failed", False, f"internal error: {exc!r}", started, time.time())
    verified = bool(getattr(outcome, "verified", False))
    if job.spec.verify and not verified:
        return JobResult(
            "failed", False, "restore finished but was NOT verified", started, time.time()
        )
    message = "restored and verified" if verified else "restored (verification switched off)"
    if custom is None:
        return JobResult("success", verified, message, started, time.time())
    try:
        done = run_customize(custom, job.target.path, reporter)
    except BootmediaError as exc:
        return JobResult(
            "failed", verified, f"{message}, but customize FAILED: {exc}", started, time.time()
        )
    message += f"; customized: {done.summary_line()}"
    return JobResult("success", verified, message, started, time.time(), done.to_dict())


def _run_receive(job: UnattendedPlan, reporter: Reporter, started: float) -> JobResult:
    """A multicast receiver (bootmedia receive), the job's repository as its fallback."""
    from bootmedia.cast.receiver import receive
    from bootmedia.cast.sender import DEFAULT_RDV

    try:
        res = receive(
            job.target.path,
            fallback=str(job.repo),
            fallback_label=label(job.repo),
            image=job.spec.image,
            interface=job.spec.interface or None,
            rdv=job.spec.rdv or DEFAULT_RDV,
            reporter=reporter,
        )
    except Cancelled as exc:
        return JobResult("cancelled", False, str(exc), started, time.time())
    except BootmediaError as exc:
        return JobResult("failed", False, str(exc), started, time.time())
    except Exception as exc:  # a bug; still a result on the stick
        log.exception("unattended receive failed")
        return JobResult("failed", False, f"internal error: {exc!r}", started, time.time())
    if not res.ok:
        return JobResult("failed", False, res.detail, started, time.time())
    return JobResult("success", True, f"received and {res.detail}", started, time.time())


def after_command(after: str) -> list[str] | None:
    """The command that ends an unattended run: systemctl poweroff/reboot, or None to stay."""
    return {"poweroff": ["systemctl", "poweroff"], "reboot": ["systemctl", "reboot"]}.get(after)
