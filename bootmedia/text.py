"""Text from outside (image names and descriptions, partition and filesystem labels, disk models
and serials) made fit for a terminal, the TUI and the log.

A hostile image or USB device can carry escape sequences that move the cursor, recolour or
rewrite the confirmation text, and bidi overrides that show a name backwards. printable() is
used at the output edges (CLI lines, TUI cells, log records): it removes ESC sequences, C0 and C1
controls, bidi overrides and other invisible format characters, turns line breaks and tabs into
spaces, and cuts the result to a length, ending it with CUT ("...").
"""

from __future__ import annotations

import re
import unicodedata

# ESC sequences as terminals read them: CSI (ESC [ ... final), OSC/DCS/PM/APC strings up to ST
# or BEL, and two-character escapes. The 8-bit CSI (U+009B) is a C1 control, removed below.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?",  # the rest (and a lone ESC)
    re.DOTALL,
)
_SPACES = re.compile(r"[\t\n\r\v\f\u2028\u2029\x85]+")
# Cc: C0 and C1 controls; Cf: format (bidi overrides and isolates, zero-width joiners, BOM);
# Cs/Co/Cn: surrogates, private use, unassigned.
_DROP = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))
# What a cut text ends with: ASCII, which every terminal draws (the Linux console's font has no
# U+2026 "…", and a vt100 or a serial line has nothing beyond ASCII: app/glyphs.py).
CUT = "..."


def printable(text: object, limit: int | None = None) -> str:
    """`text` as one line that shows what it is and nothing else; at most `limit` characters."""
    s = text if isinstance(text, str) else str(text)
    s = _ESCAPES.sub("", s)
    s = _SPACES.sub(" ", s)
    if not s.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in s):
        s = "".join(c for c in s if unicodedata.category(c) not in _DROP)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - len(CUT))] + CUT if limit >= len(CUT) else s[:limit]
    return s


def plural(n: int, one: str, many: str = "") -> str:
    """`n` and the noun that goes with it: "1 image", "3 images", "0 images"; `many` where the
    plural is not one + "s" ("1 copy", "2 copies")."""
    return f"{n} {one if n == 1 else (many or one + 's')}"
