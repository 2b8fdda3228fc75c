"""Wizards as plain async functions: push a step, await its answer, go on or go back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.screen import Screen

if TYPE_CHECKING:
    from app.app import BootmediaApp
    from app.jobs import Job

# A step's factory may return None: the step does not apply (it is skipped either way).
Step = tuple[str, Callable[[dict[str, Any]], Screen[Any] | None]]


async def run_steps(
    app: BootmediaApp, steps: list[Step], given: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Each step's screen dismisses with a value (go on) or None (Esc: go back one step).
    Returns every step's answer by key, or None when the technician backed out of step one.
    `given` answers come from where the wizard was started (the image chosen on Images)."""
    answers: dict[str, Any] = dict(given or {})
    i, step = 0, 1
    while i < len(steps):
        key, make = steps[i]
        screen = make(answers)
        if screen is None:
            answers.pop(key, None)
            if i + step < 0:
                return None
            i += step
            continue
        value = await app.push_screen_wait(screen)
        if value is None:
            if i == 0:
                return None
            i, step = i - 1, -1
        else:
            answers[key] = value
            i, step = i + 1, 1
    return answers


async def run_job(app: BootmediaApp, job: Job) -> None:
    """Progress, then result. Shared by every wizard's last two steps."""
    from app.screens.progress import ProgressScreen
    from app.screens.result import ErrorScreen, ResultScreen

    outcome = await app.push_screen_wait(ProgressScreen(job))
    if outcome.error:
        await app.push_screen_wait(ErrorScreen(outcome.error, str(app.session.log_path)))
    else:
        await app.push_screen_wait(ResultScreen(outcome, job.title, job.afterwards))
