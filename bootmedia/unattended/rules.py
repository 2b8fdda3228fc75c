"""Target rules: which disk an unattended job writes, chosen by what the disk is (internal,
serial, model, bus, WWN, by-id name, size), never by a kernel name. A rule that matches no disk or
more than one stops the job; the boot stick is never a candidate."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bootmedia.disks import check_writable
from bootmedia.disks.model import Disk
from bootmedia.errors import BootmediaError
from bootmedia.text import printable
from bootmedia.unattended.base import (
    DATA_DIR,
    DATA_LABEL,
    EXTERNAL_TRANSPORTS,
    LIVE_LABEL,
    UnattendedError,
)


@dataclass(frozen=True)
class Condition:
    key: str  # internal, serial, model, transport, wwn, by-id, size
    value: str = ""
    limit: int = 0  # size rules: the bytes, parsed once when the rule is read

    def matches(self, disk: Disk) -> bool:
        if self.key == "internal":
            return (
                not disk.removable
                and not getattr(disk, "read_only", False)
                and disk.transport not in EXTERNAL_TRANSPORTS
            )
        if self.key == "serial":
            return bool(disk.serial) and disk.serial.strip().lower() == self.value.lower()
        if self.key == "wwn":
            wwn = getattr(disk, "wwn", "")
            return bool(wwn) and wwn.lower().removeprefix("0x") == self.value.lower().removeprefix(
                "0x"
            )
        if self.key == "model":
            names = {disk.model.replace("_", " ").strip(), getattr(disk, "title", disk.model)}
            pattern = self.value.replace("_", " ").lower()
            return any(n and fnmatch.fnmatchcase(n.lower(), pattern) for n in names)
        if self.key == "transport":
            return disk.transport.lower() == self.value.lower()
        if self.key == "by-id":
            ids = getattr(disk, "by_id", ())
            return any(i.rsplit("/", 1)[-1] == self.value.rsplit("/", 1)[-1] for i in ids)
        if self.key == "size":  # parsed and checked by parse_rule: matching cannot fail
            return (
                disk.size >= self.limit if self.value.startswith(">=") else disk.size <= self.limit
            )
        raise AssertionError(self.key)

    def __str__(self) -> str:
        return f"{self.key}:{self.value}" if self.value else self.key


@dataclass(frozen=True)
class Rule:
    """All conditions must hold: "internal,transport:nvme" is the internal NVMe disk."""

    conditions: tuple[Condition, ...]

    def matches(self, disk: Disk) -> bool:
        return all(c.matches(disk) for c in self.conditions)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.conditions)


# A number is digits with at most one decimal part: "1.2.3G" is refused when the rule is read.
_SIZE_RE = re.compile(r"(>=|<=)\s*(\d{1,15}(?:\.\d{1,6})?\s*[kKmMgGtT]?[bB]?)")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_VALUED = ("serial", "model", "transport", "wwn", "by-id", "size")
RULE_HELP = (
    "internal (the one internal, non-removable disk), serial:SERIAL, model:GLOB, "
    "transport:nvme|sata|..., wwn:WWN, by-id:NAME, size:>=100G; join with ',' to combine"
)


def parse_size(text: str) -> int:
    """Decimal units, the way disk labels print them: 500G = 500 * 10**9 bytes."""
    m = re.fullmatch(r"(\d{1,15})(?:\.(\d{1,6}))?\s*([kKmMgGtT]?)[bB]?", text.strip())
    if not m:
        raise ValueError(text)
    whole, frac, unit = m.group(1), m.group(2) or "", m.group(3).lower()
    # Exact decimal arithmetic: 1.2T is 1_200_000_000_000 bytes, not a float's neighbour.
    return (int(whole) * 10 ** len(frac) + int(frac or 0)) * _UNITS[unit] // 10 ** len(frac)


def parse_rule(text: str, source: str = "target") -> Rule:
    """Parse a target rule. Kernel names (sda, /dev/nvme0n1) are refused: they are not stable."""
    text = text.strip()
    if not text:
        raise UnattendedError(f"{source}: no target rule; use {RULE_HELP}")
    conditions = []
    for part in text.split(","):
        part = part.strip()
        key, sep, value = part.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if key == "internal" and not sep:
            conditions.append(Condition("internal"))
        elif key in _VALUED and sep and value:
            limit = 0
            if key == "size":
                m = _SIZE_RE.fullmatch(value)
                if not m:
                    raise UnattendedError(
                        f"{source}: size rule {printable(value, 40)!r}: write size:>=100G or "
                        "size:<=2T (one number, decimal units)"
                    )
                value = f"{m.group(1)}{m.group(2).replace(' ', '')}"
                limit = parse_size(m.group(2))
            conditions.append(Condition(key, value, limit))
        elif re.fullmatch(
            r"(/dev/)?(sd[a-z]+|nvme\d+n\d+|vd[a-z]+|hd[a-z]+|mmcblk\d+|loop\d+)", part
        ):
            raise UnattendedError(
                f"{source}: target {part!r} is a kernel name, which can change between boots; "
                f"use a rule instead: {RULE_HELP}"
            )
        else:
            raise UnattendedError(f"{source}: target rule {part!r} not understood; use {RULE_HELP}")
    return Rule(tuple(conditions))


def is_boot_stick(disk: Disk) -> bool:
    """The stick bootmedia runs from (or its data partition's disk): never a target."""
    labels = {p.label for p in disk.partitions}
    if DATA_LABEL in labels or LIVE_LABEL in labels:
        return True
    return any(
        m.startswith(("/run/live/medium", "/lib/live/mount/medium", str(DATA_DIR)))
        for m in disk.all_mountpoints
    )


Refusal = Callable[[Disk], "str | None"]


def select_target(rule: Rule, disks: Iterable[Disk], refusal: Refusal | None = None) -> Disk:
    """The one disk the rule matches, or UnattendedError saying why there is not exactly one.

    The boot stick is left out before matching. The match is then put through the safety rules
    (refusal returns a reason or None): a refused disk stops the job; it is never skipped in
    favour of another.
    """
    candidates = [d for d in disks if not is_boot_stick(d)]
    matches = [d for d in candidates if rule.matches(d)]
    if not matches:
        seen = "; ".join(d.label() for d in candidates) or "no disks at all"
        raise UnattendedError(f"no disk matches target rule {str(rule)!r}. Disks here: {seen}")
    if len(matches) > 1:
        listed = "; ".join(d.label() for d in matches)
        raise UnattendedError(
            f"target rule {str(rule)!r} matches {len(matches)} disks, so the job stops rather "
            f"than guess: {listed}. Name one with serial:... in the rule."
        )
    disk = matches[0]
    reason = refusal(disk) if refusal else None
    if reason:
        raise UnattendedError(
            f"target {disk.label()} matches {str(rule)!r} but is refused: {reason}"
        )
    return disk


def default_refusal(disk: Disk) -> str | None:
    """The disk-safety rules of bootmedia.disks (None: writable). Imported like any module: a
    safety check that fails to load stops the program, it never turns into "writable"."""
    try:
        check_writable(disk)
    except BootmediaError as exc:
        return str(exc)
    return None
