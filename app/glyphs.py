"""Glyphs the Linux console can draw.

The VT's console font (Lat2-Terminus16 and friends, derived from code page 437) has plain and
double box-drawing lines, the full/half/shade blocks and a few arrows, and nothing else beyond
Latin. Textual's defaults use eighth blocks for scrollbars, rounded corners and a few symbols, which
show up as diamonds. `make_console_safe()` swaps those for glyphs the font has; our own widgets
draw only from SAFE.
"""

from __future__ import annotations

import string

# Code page 437's graphic characters that Terminus has, plus printable ASCII.
BOX = "─│┌┐└┘├┤┬┴┼═║╔╗╚╝╠╣╦╩╬╒╓╕╖╘╙╛╜╞╟╡╢╤╥╧╨╪╫"
# Half blocks are in code page 437 but not in every console font (the e2e screenshot of tty1
# showed them as diamonds), so only the full block and the shades are used.
BLOCKS = "█░▒▓"
SYMBOLS = "←↑→↓·•°±×÷«»¦"
SAFE = frozenset(string.printable.replace("\t", "").replace("\r", "") + BOX + BLOCKS + SYMBOLS)

BAR_FULL = "█"
BAR_EMPTY = "░"
SPARK_ROWS = 4  # the sparkline is drawn in whole cells of BAR_FULL, four rows tall


def unsafe_glyphs(text: str) -> set[str]:
    """Characters in text that the console font cannot draw."""
    return {ch for ch in text if ch not in SAFE and ch != "\n"}


def make_console_safe() -> None:
    """Patch Textual's built-in glyphs for the console font. Idempotent."""
    from textual.scrollbar import ScrollBarRender
    from textual.widgets import RadioButton

    # Scrollbar ends are drawn in eighths for smoothness; whole cells are fine here.
    ScrollBarRender.VERTICAL_BARS = [" "] * 8
    ScrollBarRender.HORIZONTAL_BARS = [" "] * 8
    RadioButton.BUTTON_INNER = "*"
