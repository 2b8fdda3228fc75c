"""Pilot helpers shared by the TUI tests."""

from __future__ import annotations

import asyncio
import functools
import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from bootmedia import lab

CAN_LOOP, WHY_NOT = lab.can_use_loop()
# `root` (tests/conftest.py): skipped, saying why, without loop devices; lets the test guard
# allow real tools.
needs_loop = pytest.mark.root


def sparse_copy(src: str, dst: str) -> None:
    """copytree's copy_function for the lab's sparse disk files."""
    import subprocess

    subprocess.run(["cp", "--sparse=always", src, dst], check=True)


def screen_text(app: Any) -> str:
    """The screen as plain text, exactly the characters a terminal would show."""
    console = Console(
        width=app.size.width,
        height=app.size.height,
        file=io.StringIO(),
        record=True,
        color_system=None,
        legacy_windows=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def wait_for(
    pilot: Any, predicate: Callable[[], object], timeout: float = 60.0, what: str = ""
) -> None:
    """Let the app run until predicate() is true (workers run in threads meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what or predicate}; screen:\n{screen_text(pilot.app)}"
            )
        await pilot.pause(0.05)
    await pilot.pause(0.05)


async def wait_for_screen(pilot: Any, name: str, timeout: float = 60.0) -> Any:
    await wait_for(
        pilot, lambda: type(pilot.app.screen).__name__ == name, timeout, f"screen {name}"
    )
    return pilot.app.screen


async def type_text(pilot: Any, text: str) -> None:
    await pilot.press(*[{" ": "space"}.get(c, c) for c in text])


async def pick_choice(pilot: Any, option: str, what: str) -> Any:
    """On a ChoicePickScreen (layouts, wipe methods): wait for the list, highlight `option`.
    Returns the OptionList so a test can look at the other choices before pressing Enter."""
    picker = await wait_for_screen(pilot, "ChoicePickScreen")
    menu = picker.query_one("OptionList")
    await wait_for(pilot, lambda: menu.option_count > 0, what=what)
    menu.highlighted = menu.get_option_index(option)
    return menu


async def wait_for_plan(pilot: Any, what: str) -> Any:
    """The SummaryScreen, once its job's plan is ready."""
    summary = await wait_for_screen(pilot, "SummaryScreen")
    await wait_for(pilot, lambda: summary.job is not None, what=what)
    return summary


def async_test(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async test body with asyncio.run (keeps the test extras free of an async plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def footer_cut(app: Any) -> list[str]:
    """The footer's key hints that do not fit on the screen (drawn past its right edge)."""
    width = app.size.width
    return [
        f"{key.key_display or key.key} {key.description}"
        for key in app.screen.query("FooterKey")
        if key.region.right > width or key.region.width == 0
    ]


def lines_cut(app: Any, *phrases: str) -> list[str]:
    """Of `phrases`, those not shown whole on one line of the screen (cut or wrapped)."""
    text = screen_text(app)
    return [p for p in phrases if not any(p in line for line in text.splitlines())]


def flat_text(app: Any) -> str:
    """The screen's words in order, borders and line breaks gone (for text that wraps)."""
    lines = screen_text(app).splitlines()
    return " ".join(" ".join(line.strip(" │") for line in lines).split())
