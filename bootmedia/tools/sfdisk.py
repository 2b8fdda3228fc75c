"""sfdisk: read a table as JSON, render one as a script, write it.

A script field is data from an image, so nothing in it may end the field or the line: every
value is checked against what sfdisk itself would print for it (hex ids, attribute names), and a
name is quoted with sfdisk's \\xNN escapes for '"', '\\' and control characters. sfdisk cannot
write a name outside the Basic Multilingual Plane at all; bootmedia.tools.gpt writes those.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bootmedia import blockdev
from bootmedia.errors import BootmediaError, ImageError
from bootmedia.run import run
from bootmedia.tools import partx

# A GUID, an MBR type or id in hex, or one of sfdisk's aliases (L, U, S...): nothing that could
# end a field or a line.
_HEX_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}\Z")
_MBR_ID = re.compile(r"0x[0-9A-Fa-f]{1,8}\Z")
_ATTRS = re.compile(r"[A-Za-z0-9:, ]{0,200}\Z")  # "RequiredPartition GUID:60,62"
GPT_NAME_UNITS = 36  # a GPT entry's name: 72 bytes of UTF-16LE


def read(device: str) -> dict[str, Any] | None:
    """The "partitiontable" object of `sfdisk -J`, or None when there is no table."""
    proc = run(["sfdisk", "-J", device], check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        if "does not contain a recognized partition table" in err or not err.strip():
            return None
        raise BootmediaError(f"sfdisk -J {device} failed: {err.strip().splitlines()[-1]}")
    try:
        table = json.loads(proc.stdout)["partitiontable"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BootmediaError(f"sfdisk -J {device}: unreadable output ({exc})") from None
    if not isinstance(table, dict):
        raise BootmediaError(f"sfdisk -J {device}: unreadable output")
    return table


def partition_number(node: str) -> int:
    """/dev/sda12 -> 12, /dev/loop3p2 -> 2 (sfdisk -J names partitions by node)."""
    return int(node[len(node.rstrip("0123456789")) :])


def fits_gpt(name: str) -> bool:
    return len(name.encode("utf-16-le")) // 2 <= GPT_NAME_UNITS


def sfdisk_can_name(name: str) -> bool:
    """sfdisk converts names to UTF-16 itself and silently drops one outside the BMP."""
    return all(ord(c) <= 0xFFFF for c in name)


def quote_name(name: str) -> str:
    """name="..." with sfdisk's escapes: \\xNN (a UTF-8 byte) for quotes, backslashes and
    control characters; everything else as UTF-8."""
    out = []
    for c in name:
        if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append("".join(f"\\x{b:02x}" for b in c.encode()))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def check_field(what: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(value):
        raise ImageError(f"partition table: {what} {value!r} is not a valid value")
    return value


def check_id(what: str, value: str) -> str:
    return check_field(what, value, _MBR_ID if value.lower().startswith("0x") else _HEX_ID)


def check_attrs(value: str) -> str:
    return check_field("attrs", value, _ATTRS)


def write(device: str, script: str) -> None:
    """Write the table, then tell the kernel with partx (which also covers a loop device
    without udev); `udevadm settle` waits for the nodes where udev runs. --no-tell-kernel
    also keeps sfdisk from calling a global sync() after its own fsync of the device, which
    on a busy machine waited seconds for other processes' dirty data."""
    run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--wipe", "never", device],
        input=script.encode(),
    )
    if blockdev.is_block(device):
        partx.reread(device)
