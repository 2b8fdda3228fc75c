"""Issue 13 item 6: keys are never lost. A technician who knows the way types ahead while the
next screen loads; every key lands, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import events
from tui_helpers import async_test, needs_loop, wait_for, wait_for_screen

pytestmark = needs_loop


async def type_fast(app: Any, *keys: str, gap: float = 0.12) -> None:
    """Keys as a terminal delivers them: through the driver, `gap` seconds apart, without
    waiting for the app to settle in between (Pilot's press() waits, which hides the bug)."""
    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)
        await asyncio.sleep(gap)


@async_test
async def test_keys_typed_ahead_reach_the_screens_that_load(demo_lab: Any, make_app: Any) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        # r, then Enter (image), Enter (the first usable disk), Enter (options): no pauses.
        await type_fast(app, "r", "enter", "enter", "enter")
        summary = await wait_for_screen(pilot, "SummaryScreen", timeout=60)
        await wait_for(pilot, lambda: summary.job is not None, what="the plan")
        assert summary.job.confirm is not None
        assert summary.job.confirm.disk.path == demo_lab.loops["newpc-1.img"]
