"""Plan and result lines fitted to the pane, the way a person would break them.

The engine's summaries are written for a terminal of any width. At 80 columns Rich wrapped them
wherever a line ran out: "1.1" at the end of one line and "GB" at the start of the next,
"Windows 11 23H2 +" and "Office", a table row's last word alone at the left margin. Here:

- a block of table rows (columns set apart by runs of spaces) is narrowed by taking spaces out
  of the columns every row has blank, so it stays one line per row and stays aligned;
- a line still too long breaks between words, never inside "1.1 GB", "4 of 4" or "A + B",
  and its continuation is indented (under the value of a "key:   value" line), so it reads as
  the same line going on.
"""

from __future__ import annotations

import re
import textwrap

GLUE = "\u00a0"  # textwrap breaks only at ASCII whitespace: this space holds a phrase together
_UNIT = re.compile(r"(?<=\d) (?=(?:[kMGTP]i?B|B|%|s|sectors?)\b)")
_OF = re.compile(r"(?<=\d) of (?=\d)")
_PLUS = re.compile(r"(?<=\S) \+ (?=\S)")
_GAP = re.compile(r"\S {2,}(?=\S)")
_KEY = re.compile(r"^(\s*[^\s:][^:]{0,24}:\s{2,})\S")


def _is_row(line: str) -> bool:
    return len(_GAP.findall(line)) >= 2


def _squeeze(rows: list[str], width: int) -> list[str]:
    """Take blank columns out of a block of table rows until the widest fits (or no column
    has spaces to spare). Only columns blank in every row go, so the rows stay aligned."""
    longest = max(len(r) for r in rows)
    if longest <= width:
        return rows
    grid = [r.ljust(longest) for r in rows]
    indent = min(len(r) - len(r.lstrip(" ")) for r in rows)
    blank = [all(g[i] == " " for g in grid) for i in range(longest)]
    runs: list[tuple[int, int]] = []  # (start, length) of inner blank runs longer than 1
    i = indent
    while i < longest:
        if blank[i]:
            j = i
            while j < longest and blank[j]:
                j += 1
            if j < longest and j - i > 1:
                runs.append((i, j - i))
            i = j
        else:
            i += 1
    drop: set[int] = set()
    excess = longest - width
    kept = {start: length for start, length in runs}
    for gap in (2, 1):  # two spaces between columns where that fits, else one
        while excess > 0 and any(kept[s] > gap for s in kept):
            for start in sorted(kept, key=lambda s: -kept[s]):
                if excess <= 0 or kept[start] <= gap:
                    continue
                kept[start] -= 1
                drop.add(start + kept[start])
                excess -= 1
    return ["".join(ch for k, ch in enumerate(g) if k not in drop).rstrip() for g in grid]


def _glue(line: str) -> str:
    for pattern in (_UNIT, _OF):
        line = pattern.sub(lambda m: m.group(0).replace(" ", GLUE), line)
    return _PLUS.sub(f"{GLUE}+{GLUE}", line)


def _hang(line: str, width: int) -> str:
    key = _KEY.match(line)
    lead = len(line) - len(line.lstrip(" "))
    indent = len(key.group(1)) if key else lead + (4 if _is_row(line) else 2)
    return " " * min(indent, width // 2)


def fit_lines(lines: list[str] | tuple[str, ...], width: int) -> list[str]:
    """`lines` as they should be drawn `width` cells wide (see the module docstring)."""
    width = max(20, width)
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        out.extend(_squeeze(block, width) if len(block) > 1 else block)
        block.clear()

    for line in lines:
        if _is_row(line):
            block.append(line.rstrip())
            continue
        flush()
        out.append(line.rstrip())
    flush()
    fitted: list[str] = []
    for line in out:
        if len(line) <= width:
            fitted.append(line)
            continue
        wrapped = textwrap.wrap(
            _glue(line),
            width,
            subsequent_indent=_hang(line, width),
            break_long_words=True,
            break_on_hyphens=False,
        )
        fitted.extend(w.replace(GLUE, " ") for w in wrapped)
    return fitted


_OPTION = re.compile(r"(?<!\S)(--?[\w-]+) (?=[^\s-])")


def wrap_command(command: str, width: int) -> list[str]:
    """'Command line: ...' in lines of `width`, broken between words but never between an
    option and its value ("--confirm" at the end of one line, "765D" alone on the next)."""
    glued = _OPTION.sub(lambda m: m.group(1) + GLUE, f"Command line: {command}")
    lines = textwrap.wrap(glued, max(20, width), break_long_words=True, break_on_hyphens=False)
    return [line.replace(GLUE, " ") for line in lines]
