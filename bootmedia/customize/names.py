"""Naming rules: where a restored machine's name comes from, and the rules each OS puts on it.

A rule is a fixed name, a pattern (`lab-{serial}`, `{prefix}{n:03}`), or a CSV that maps a DMI
serial or a MAC address to a name. `{n}` is a counter kept in a directory (normally the
repository's `counters/`), claimed with O_CREAT|O_EXCL files: that is atomic on local
filesystems, NFSv3+, SMB and sshfs, where flock is not to be trusted. A machine that claimed a
number before gets the same number again (its claim file names its serial).

Names are checked, never shortened: RFC 1123 (and the kernel's 64 characters) for Linux,
NetBIOS (15 characters, letters, digits and '-') for Windows.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia.errors import UsageError

DMI = Path("/sys/class/dmi/id")
NET = Path("/sys/class/net")
FIELDS = ("serial", "mac", "asset", "n", "prefix")
CSV_LIMIT = 16 << 20
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NETBIOS = re.compile(r"^[A-Za-z0-9-]{1,15}$")
# Values vendors put in DMI fields that are not a serial at all.
_PLACEHOLDERS = {
    "",
    "0",
    "none",
    "default string",
    "to be filled by o.e.m.",
    "system serial number",
    "not specified",
    "0123456789",
}


@dataclass(frozen=True)
class Machine:
    """What identifies the machine being restored: read once, shown in the plan."""

    serial: str = ""
    macs: tuple[str, ...] = ()  # lowercase aa:bb:cc:dd:ee:ff, physical NICs first
    asset: str = ""

    @property
    def mac(self) -> str:
        return self.macs[0] if self.macs else ""

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "macs": list(self.macs), "asset": self.asset}


def _dmi(name: str, root: Path) -> str:
    try:
        value = (root / name).read_text(errors="replace").strip()
    except OSError:
        return ""
    return "" if value.lower() in _PLACEHOLDERS else value


def read_machine(dmi: Path = DMI, net: Path = NET) -> Machine:
    macs: list[tuple[int, str]] = []
    for dev in sorted(net.iterdir()) if net.is_dir() else []:
        try:
            addr = (dev / "address").read_text().strip().lower()
        except OSError:
            continue
        if not addr or addr == "00:00:00:00:00:00" or dev.name == "lo":
            continue
        physical = (dev / "device").exists()
        macs.append((0 if physical else 1, addr))
    return Machine(
        serial=_dmi("product_serial", dmi),
        macs=tuple(m for _, m in sorted(macs, key=lambda x: x[0])),
        asset=_dmi("chassis_asset_tag", dmi),
    )


# ---- the rules of each OS ---------------------------------------------------------------------


def name_problem(name: str, os_kind: str) -> str | None:
    """Why `name` cannot be the hostname of an `os_kind` ("linux"/"windows") machine, or None."""
    if not name:
        return "the name is empty"
    if os_kind == "windows":
        if len(name) > 15:
            return (
                f"'{name}' has {len(name)} characters: a Windows (NetBIOS) computer name has "
                "at most 15 (it is refused, not shortened)"
            )
        if not _NETBIOS.fullmatch(name):  # match() takes 'PC1\n' ($ before a newline)
            bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
            return (
                f"'{name}' has characters a Windows computer name may not have: "
                f"{' '.join(repr(c) for c in bad)} (letters, digits and '-' only)"
            )
        if name.isdigit():
            return f"'{name}' is only digits, which Windows refuses as a computer name"
        if name.startswith("-") or name.endswith("-"):
            return f"'{name}' starts or ends with '-' (not a valid DNS label)"
        return None
    if len(name) > 64:
        return f"'{name}' has {len(name)} characters: a Linux hostname has at most 64"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return (
                f"'{name}' is not an RFC 1123 hostname (each dot-separated label: 1-63 "
                "letters, digits or '-', not starting or ending with '-')"
            )
    return None


def check_name(name: str, os_kinds: tuple[str, ...]) -> None:
    for kind in os_kinds:
        problem = name_problem(name, kind)
        if problem:
            raise UsageError(problem)


# ---- rules ------------------------------------------------------------------------------------


def _pattern_fields(pattern: str) -> set[str]:
    fields: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise UsageError(f"bad name pattern '{pattern}': {exc}") from None
    for _, fname, spec, _ in parsed:
        if fname is None:
            continue
        if spec and ("{" in spec or any(int(d) > 64 for d in re.findall(r"\d+", spec))):
            raise UsageError(  # {n:999999999} would build a gigabyte before the length check
                f"bad name pattern '{pattern}': {{{fname}:{spec}}} is wider than any hostname"
            )
        if fname not in FIELDS:
            raise UsageError(
                f"bad name pattern '{pattern}': unknown field {{{fname}}} "
                f"(known: {', '.join('{' + f + '}' for f in FIELDS)})"
            )
        fields.add(fname)
    return fields


@dataclass(frozen=True)
class NameRule:
    """Where the name comes from: kind is "fixed", "pattern" or "csv"."""

    kind: str
    value: str  # the name, the pattern, or the CSV's path
    prefix: str = ""
    counter_dir: str = ""  # for {n}

    @property
    def uses_counter(self) -> bool:
        return self.kind == "pattern" and "n" in _pattern_fields(self.value)

    @property
    def per_machine(self) -> bool:
        """A rule made for many machines (a pattern or a CSV), as opposed to one fixed name."""
        return self.kind != "fixed"

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed name '{self.value}'"
        if self.kind == "csv":
            return f"the name mapped to this machine's serial or MAC in {self.value}"
        return f"pattern '{self.value}'" + (f" with prefix '{self.prefix}'" if self.prefix else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "prefix": self.prefix,
            "counter_dir": self.counter_dir,
        }


def make_rule(
    hostname: str | None = None,
    names_csv: str | None = None,
    prefix: str = "",
    counter_dir: str | Path | None = None,
) -> NameRule | None:
    if hostname and names_csv:
        raise UsageError("give a hostname (or pattern) or a names CSV, not both")
    if names_csv:
        if not Path(names_csv).is_file():
            raise UsageError(f"{names_csv}: no such names CSV")
        return NameRule("csv", str(names_csv))
    if not hostname:
        return None
    if "{" in hostname or "}" in hostname:
        fields = _pattern_fields(hostname)
        if "n" in fields and not counter_dir:
            raise UsageError(
                "the pattern uses {n}: it needs a counter directory (the repository, or "
                "--counter-dir)"
            )
        return NameRule("pattern", hostname, prefix, str(counter_dir or ""))
    return NameRule("fixed", hostname)


def _norm_mac(text: str) -> str:
    hexes = re.sub(r"[^0-9a-fA-F]", "", text)
    if len(hexes) != 12:
        return ""
    return ":".join(hexes[i : i + 2] for i in range(0, 12, 2)).lower()


def lookup_csv(path: str | Path, machine: Machine) -> str:
    """The name a CSV maps this machine to. Columns: a key (serial or MAC) and a name.

    A header row (`serial,name`, `mac,name`, `key,hostname`...) is allowed; '#' lines are
    comments. Two rows for the same key are refused, so a typo cannot pick one silently.
    """
    try:
        if Path(path).stat().st_size > CSV_LIMIT:
            raise UsageError(f"{path}: a names CSV larger than 16 MiB is refused")
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the names CSV ({exc})") from None
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    try:
        rows = list(csv.reader(lines))
    except csv.Error as exc:  # a field over csv's 128 KiB limit
        raise UsageError(f"{path}: not a names CSV ({exc})") from None
    found: dict[str, tuple[int, str]] = {}
    for lineno, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise UsageError(f"{path}: row {lineno}: expected 'serial or MAC,name'")
        key, name = cells[0], cells[1]
        if (
            lineno == 1
            and key.lower() in ("serial", "mac", "key")
            and name.lower()
            in (
                "name",
                "hostname",
            )
        ):
            continue
        # A key is looked up both as a serial and, when it reads as one, as a MAC.
        for ident in {key.lower(), _norm_mac(key)} - {""}:
            if ident in found and found[ident][1] != name:
                raise UsageError(
                    f"{path}: '{key}' maps to two names (rows {found[ident][0]} and {lineno})"
                )
            found[ident] = (lineno, name)
    if machine.serial and machine.serial.lower() in found:
        return found[machine.serial.lower()][1]
    for mac in machine.macs:
        if mac in found:
            return found[mac][1]
    who = ", ".join(x for x in (machine.serial and f"serial {machine.serial}", *machine.macs) if x)
    raise UsageError(f"{path}: no row for this machine ({who or 'no serial, no MAC'})")


# ---- the {n} counter --------------------------------------------------------------------------

COUNTERS = "counters"  # inside a repository: one directory of claim files per pattern


def counter_dir_for(pattern: str, repo: str | Path) -> Path:
    """One counter per pattern, so 'lab-{n}' and 'kiosk-{n}' count apart."""
    key = "".join(c if c.isalnum() or c in "-_" else "_" for c in pattern)[:80] or "default"
    return Path(repo) / COUNTERS / key


def _claims(counter_dir: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    if not counter_dir.is_dir():
        return out
    for p in counter_dir.iterdir():
        m = re.fullmatch(r"(\d{1,9})\.claim", p.name)
        if not m:
            continue
        try:
            text = p.read_text(errors="replace")
        except OSError:
            text = ""
        out[int(m.group(1))] = text
    return out


def _owner(machine: Machine) -> str:
    return machine.serial or machine.mac


def peek_counter(counter_dir: str | Path, machine: Machine) -> int:
    """The number this machine would get now (its own earlier claim, or the next free one)."""
    claims = _claims(Path(counter_dir))
    owner = _owner(machine)
    if owner:
        for n, text in sorted(claims.items()):
            if f"machine={owner}\n" in text:
                return n
    return max(claims, default=0) + 1


def claim_counter(counter_dir: str | Path, machine: Machine, job: str = "") -> int:
    """Claim a number: create `<n>.claim` with O_CREAT|O_EXCL, the next one up if taken.

    Each claim file is written completely and fsynced, then the directory fsynced, so a
    number once handed out is never handed out again, even after a crash.
    """
    directory = Path(counter_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot make the counter directory ({exc})") from None
    owner = _owner(machine)
    n = peek_counter(directory, machine)
    if owner and f"machine={owner}\n" in _claims(directory).get(n, ""):
        return n
    body = (
        f"machine={owner}\nhost={socket.gethostname()}\npid={os.getpid()}\njob={job}\n"
        f"time={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
    ).encode()
    for _ in range(100000):
        path = directory / f"{n:06d}.claim"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        except OSError as exc:
            raise UsageError(f"{path}: cannot claim a number ({exc})") from None
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return n
    raise UsageError(f"{directory}: no free number found")


# ---- resolving ---------------------------------------------------------------------------------


def render(rule: NameRule, machine: Machine, n: int | None) -> str:
    """The name a rule gives; UsageError when a field it needs is unknown on this machine."""
    if rule.kind == "fixed":
        return rule.value
    if rule.kind == "csv":
        return lookup_csv(rule.value, machine)
    fields = _pattern_fields(rule.value)
    values: dict[str, Any] = {
        "serial": machine.serial,
        "mac": machine.mac.replace(":", ""),
        "asset": machine.asset,
        "prefix": rule.prefix,
        "n": n if n is not None else 0,
    }
    for f in fields - {"n", "prefix"}:
        if not values[f]:
            raise UsageError(
                f"pattern '{rule.value}' needs {{{f}}}, which this machine does not have"
            )
    try:
        return rule.value.format(**values)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad name pattern '{rule.value}': {exc}") from None
