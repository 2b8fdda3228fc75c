"""Unattended jobs (bootmedia.toml or the kernel command line): find, count down, run, record.

The live system starts the TUI on every console; only the first claims the job. The job is
resolved against this machine by bootmedia.unattended (a rule picks exactly one disk or
nothing); the TUI only shows it, counts down, and runs it like any other job.
"""

from __future__ import annotations

import logging
import shlex
from typing import TYPE_CHECKING, Any

from app.flows import run_job
from app.jobs import Job, Outcome
from app.screens.countdown import CountdownScreen
from bootmedia.progress import Reporter

if TYPE_CHECKING:
    from app.app import BootmediaApp

log = logging.getLogger("bootmedia.tui")


def find_unattended() -> Any:
    """The resolved job for this boot, or None. Raises BootmediaError when the job as written
    cannot run here (the app shows why, then the menu)."""
    from bootmedia import unattended

    job = unattended.find_job()
    if job is None or not unattended.claim_job():
        return None
    return job


def unattended_command(resolved: Any) -> str:
    """The CLI command that does what the unattended job does (shown on the countdown and the
    progress screen, so a technician can repeat the job by hand): the plan's own command()."""
    return shlex.join(str(a) for a in resolved.command())


def unattended_job(resolved: Any) -> Job:
    from bootmedia import unattended

    spec = resolved.spec

    def execute(reporter: Reporter) -> Outcome:
        result = unattended.run_restore(resolved, reporter)
        lines = [result.message]
        if resolved.data_dir is not None:
            try:
                path = unattended.write_result(resolved.data_dir, resolved, result)
                lines.append(f"Result recorded in {path}")
            except OSError as exc:
                lines.append(f"The result could NOT be recorded: {exc.strerror}")
        ok = result.status == "success"
        title = f"Unattended restore of {spec.image}: {result.status}"
        return Outcome(ok, title, tuple(lines), cancelled=result.status == "cancelled")

    return Job(
        kind="restore",
        title=f"Unattended: restore {spec.image} onto {resolved.target.name}",
        summary=tuple(resolved.describe()),
        command=unattended_command(resolved),
        execute=execute,
        cancel_note=f"{resolved.target.name} is marked incomplete: it will not boot.",
        afterwards=spec.after,
    )


async def unattended_flow(app: BootmediaApp, resolved: Any) -> None:
    lines = (*resolved.describe(), "", f"Command line: {unattended_command(resolved)}")
    if not await app.push_screen_wait(CountdownScreen(lines, resolved.spec.countdown)):
        log.info("unattended job stopped by the technician")
        return
    await run_job(app, unattended_job(resolved))
