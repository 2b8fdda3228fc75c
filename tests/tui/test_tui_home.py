"""Home at 80x25 (issue 13, newcomer findings): the menu in three groups, one power entry, and
the machine pane wrapping between words instead of cutting contents and refusals."""

from __future__ import annotations

from typing import Any

from tui_helpers import (
    async_test,
    footer_cut,
    lines_cut,
    needs_loop,
    screen_text,
    wait_for,
    wait_for_screen,
)

from app.screens.home import ENTRIES, MENU

pytestmark = needs_loop


def test_the_menu_has_twelve_entries_in_three_groups() -> None:
    assert len(ENTRIES) == 12 and MENU.count(None) == 2
    assert [e[0] for e in ENTRIES] == list("rckwpvmidlso")  # one key each, no two alike


@async_test
async def test_home_fits_and_reads_at_80x25(demo_lab: Any, make_app: Any) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for(pilot, lambda: "Images (1)" in screen_text(app), what="the machine pane")
        shown = screen_text(app)
        assert "─" * 30 in shown  # the groups' separators (a console-safe line)
        # The stick's refusal and the sample disk's contents are whole, not cut mid-word.
        assert not lines_cut(app, "refused: is the bootmedia stick", "ext4/sample-root,")
        assert not footer_cut(app)
        await pilot.press("o")
        await wait_for_screen(pilot, "PowerChoice")
        assert "r reboot    o power off    Esc neither" in screen_text(app)
        await pilot.press("escape")
        await wait_for_screen(pilot, "HomeScreen")
        await pilot.press("o")
        await wait_for_screen(pilot, "PowerChoice")
        await pilot.press("r")  # the demo lab only says what would happen
        await wait_for(
            pilot,
            lambda: "Demo lab: the machine would reboot now." in screen_text(app),
            what="the notice",
        )
        assert type(app.screen).__name__ == "HomeScreen"
