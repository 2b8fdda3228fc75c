"""A restored Windows system: its computer name in the offline SYSTEM hive, and sysprep state.

The hive is edited with hivex (Debian's python3-hivex, the library libguestfs and virt-win-reg
use), on the NTFS volume mounted read-write by ntfs-3g only for the edit. The name is written in
every control set (ControlSet001, 002...), so "Last Known Good" cannot bring the old name back:
  Control\\ComputerName\\ComputerName        ComputerName   (upper case, as Windows keeps it)
  Control\\ComputerName\\ActiveComputerName  ComputerName
  Services\\Tcpip\\Parameters                Hostname, NV Hostname (as given)
A hive whose two sequence numbers differ was not closed cleanly (Windows crashed, or fast
startup hibernated it): its transaction logs hold changes hivex would not see, so it is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

try:
    import hivex
except ImportError:  # Debian's python3-hivex, linked into the venv by scripts/link-hivex.sh
    hivex = None

from bootmedia.customize.mount import mounted
from bootmedia.disks.model import Partition
from bootmedia.errors import BootmediaError

REG_SZ = 1
REG_DWORD = 4
NAME_KEYS = ("ComputerName", "ActiveComputerName")
TCPIP = ("Services", "Tcpip", "Parameters")
GENERALIZED = 7  # SYSTEM\Setup\Status\SysprepStatus GeneralizationState after /generalize


@dataclass(frozen=True)
class WindowsSystem:
    device: str
    hive: str  # path of SYSTEM inside the volume, as found ("Windows/System32/config/SYSTEM")
    computer_name: str
    hostname: str  # Tcpip Hostname
    control_sets: tuple[str, ...]  # ("ControlSet001", ...)
    generalized: bool
    sysprep_evidence: tuple[str, ...]  # what said so, in words

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "hive": self.hive,
            "computer_name": self.computer_name,
            "hostname": self.hostname,
            "control_sets": list(self.control_sets),
            "generalized": self.generalized,
            "sysprep_evidence": list(self.sysprep_evidence),
        }


def _find_ci(root: str, rel: str) -> str | None:
    """A path under root matched case-insensitively (NTFS is, ntfs-3g's lookups are not)."""
    cur, found = root, []
    for part in rel.split("/"):
        try:
            names = os.listdir(cur)
        except OSError:
            return None
        match = next((n for n in names if n.lower() == part.lower()), None)
        if match is None:
            return None
        cur = os.path.join(cur, match)
        if os.path.islink(cur):
            return None
        found.append(match)
    return "/".join(found)


def _sz(h: hivex.Hivex, node: int, name: str) -> str:
    v = h.node_get_value(node, name) if node else 0
    if not v:
        return ""
    t, data = h.value_value(v)
    if t not in (REG_SZ, 2):
        return ""
    return data.decode("utf-16-le", errors="replace").rstrip("\0")


def _dword(h: hivex.Hivex, node: int, name: str) -> int | None:
    v = h.node_get_value(node, name) if node else 0
    if not v:
        return None
    t, data = h.value_value(v)
    return struct.unpack("<I", data[:4])[0] if t == REG_DWORD and len(data) >= 4 else None


def _path(h: hivex.Hivex, *names: str) -> int:
    node = h.root()
    for name in names:
        node = h.node_get_child(node, name) if node else 0
    return node or 0


def _need_hivex() -> None:
    if hivex is None:
        raise BootmediaError(
            "editing a Windows hive needs Debian's python3-hivex in bootmedia's Python "
            "(apt-get install python3-hivex; scripts/link-hivex.sh VENV/bin/python)"
        )


def check_clean(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) < 512 or head[:4] != b"regf":
        raise BootmediaError(f"{path}: not a registry hive")
    seq1, seq2 = struct.unpack_from("<II", head, 4)
    if seq1 != seq2:
        raise BootmediaError(
            "the SYSTEM hive was not closed cleanly (Windows crashed or hibernated with fast "
            "startup): boot Windows, shut it down fully (shutdown /s /t 0), capture again"
        )


def control_sets(h: hivex.Hivex) -> tuple[str, ...]:
    return tuple(
        sorted(
            h.node_name(c)
            for c in h.node_children(h.root())
            if re.fullmatch(r"ControlSet\d{3}", h.node_name(c), re.IGNORECASE)
        )
    )


def read_hive(path: str) -> tuple[str, str, tuple[str, ...], list[str]]:
    """(ComputerName, Tcpip Hostname, control sets, sysprep evidence) from a SYSTEM hive."""
    _need_hivex()
    h = hivex.Hivex(path)
    current = _dword(h, _path(h, "Select"), "Current") or 1
    cs = f"ControlSet{current:03d}"
    name = _sz(h, _path(h, cs, "Control", "ComputerName", "ComputerName"), "ComputerName")
    host = _sz(h, _path(h, cs, *TCPIP), "Hostname")
    evidence = []
    state = _dword(h, _path(h, "Setup", "Status", "SysprepStatus"), "GeneralizationState")
    if state is not None:
        evidence.append(f"SYSTEM\\Setup\\Status\\SysprepStatus GeneralizationState={state}")
    setup = _path(h, "Setup")
    in_progress = _dword(h, setup, "SystemSetupInProgress")
    cmdline = _sz(h, setup, "CmdLine")
    if in_progress is not None:
        evidence.append(f"SYSTEM\\Setup SystemSetupInProgress={in_progress}")
    if cmdline:
        evidence.append(f"SYSTEM\\Setup CmdLine={cmdline}")
    return name, host, control_sets(h), evidence


def _image_state(root: str) -> str:
    rel = _find_ci(root, "Windows/Setup/State/State.ini")
    if rel is None:
        return ""
    with contextlib.suppress(OSError):
        with open(os.path.join(root, rel), "rb") as f:
            raw = f.read(1 << 16)
        text = raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "latin-1")
        m = re.search(r"ImageState\s*=\s*(\S+)", text)
        if m:
            return m.group(1)
    return ""


def is_generalized(evidence: list[str], image_state: str) -> bool:
    if image_state:
        return "GENERALIZE_RESEAL" in image_state.upper()
    for line in evidence:
        if line.endswith(f"GeneralizationState={GENERALIZED}"):
            return True
        if "windeploy" in line.lower():
            return True
    return False


def inspect(p: Partition) -> WindowsSystem | None:
    with mounted(p.path, "ntfs") as mnt:
        rel = _find_ci(mnt, "Windows/System32/config/SYSTEM")
        if rel is None:
            return None
        path = os.path.join(mnt, rel)
        check_clean(path)
        try:
            name, host, sets, evidence = read_hive(path)
        except RuntimeError as exc:  # hivex raises RuntimeError with the C library's errno
            raise BootmediaError(f"{p.path}: cannot read {rel}: {exc}") from None
        state = _image_state(mnt)
        if state:
            evidence.append(f"Windows\\Setup\\State\\State.ini ImageState={state}")
    if not sets:
        raise BootmediaError(f"{p.path}: {rel} has no ControlSet00N key")
    return WindowsSystem(
        device=p.path,
        hive=rel,
        computer_name=name,
        hostname=host,
        control_sets=sets,
        generalized=is_generalized(evidence, state),
        sysprep_evidence=tuple(evidence),
    )


def find_windows(partitions: tuple[Partition, ...]) -> WindowsSystem | None:
    found = [w for p in partitions if p.fstype == "ntfs" for w in [inspect(p)] if w]
    if len(found) > 1:
        raise BootmediaError(
            f"several Windows systems on the disk ({', '.join(w.device for w in found)})"
        )
    return found[0] if found else None


def _child(h: hivex.Hivex, parent: int, name: str) -> int:
    node = h.node_get_child(parent, name)
    return node if node else h.node_add_child(parent, name)


def _set_sz(h: hivex.Hivex, node: int, key: str, value: str) -> None:
    h.node_set_value(node, {"key": key, "t": REG_SZ, "value": (value + "\0").encode("utf-16-le")})


def set_name_in_hive(path: str, name: str) -> None:
    """Write the name into every control set of the hive at path, and commit."""
    check_clean(path)
    _need_hivex()
    h = hivex.Hivex(path, write=True)
    sets = control_sets(h)
    if not sets:
        raise BootmediaError(f"{path}: no ControlSet00N key")
    for cs in sets:
        node = _child(h, h.root(), cs)
        control = _child(h, node, "Control")
        names = _child(h, control, "ComputerName")
        for key in NAME_KEYS:
            _set_sz(h, _child(h, names, key), "ComputerName", name.upper())
        tcpip = node
        for part in TCPIP:
            tcpip = _child(h, tcpip, part)
        _set_sz(h, tcpip, "Hostname", name)
        _set_sz(h, tcpip, "NV Hostname", name)
    h.commit(None)


def hive_names(path: str) -> dict[str, dict[str, str]]:
    """Per control set, the four values read back (for the job's check and the result)."""
    _need_hivex()
    h = hivex.Hivex(path)
    out: dict[str, dict[str, str]] = {}
    for cs in control_sets(h):
        names = _path(h, cs, "Control", "ComputerName")
        tcpip = _path(h, cs, *TCPIP)
        out[cs] = {
            "ComputerName": _sz(
                h, h.node_get_child(names, "ComputerName") if names else 0, "ComputerName"
            ),
            "ActiveComputerName": _sz(
                h, h.node_get_child(names, "ActiveComputerName") if names else 0, "ComputerName"
            ),
            "Hostname": _sz(h, tcpip, "Hostname"),
            "NV Hostname": _sz(h, tcpip, "NV Hostname"),
        }
    return out


def expected_names(name: str) -> dict[str, str]:
    return {
        "ComputerName": name.upper(),
        "ActiveComputerName": name.upper(),
        "Hostname": name,
        "NV Hostname": name,
    }


def apply_name(win: WindowsSystem, name: str) -> None:
    with mounted(win.device, "ntfs", write=True) as mnt:
        try:
            set_name_in_hive(os.path.join(mnt, win.hive), name)
        except RuntimeError as exc:
            raise BootmediaError(f"{win.device}: editing {win.hive} failed: {exc}") from None


def read_back(win: WindowsSystem) -> dict[str, dict[str, str]]:
    with mounted(win.device, "ntfs") as mnt:
        return hive_names(os.path.join(mnt, win.hive))
