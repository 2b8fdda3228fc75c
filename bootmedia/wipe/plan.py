"""Which wipe methods a disk supports (and why the others are not offered), and the frozen plan."""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass, field
from typing import Any

from bootmedia.disks import Disk
from bootmedia.disks.files import TRANSPORT
from bootmedia.errors import BootmediaError, UsageError
from bootmedia.progress import human_size
from bootmedia.run import run, which
from bootmedia.wipe import ata, nvme
from bootmedia.wipe.verify import DEFAULT_SAMPLES

METHODS = {
    "quick": "remove every signature (wipefs), zero the first and last MiB",
    "zero": "overwrite the whole disk with zeros, one pass",
    "random": "overwrite the whole disk with a fast pseudo-random stream, one pass",
    "discard": "tell the device every block is unused (blkdiscard)",
    "nvme-format": "NVMe Format with secure erase (crypto erase where supported)",
    "nvme-sanitize": "NVMe Sanitize: block erase, crypto erase or overwrite by the controller",
    "ata-secure-erase": "ATA SECURITY ERASE UNIT through hdparm",
}
HARDWARE = ("nvme-format", "nvme-sanitize", "ata-secure-erase")
MIB = 1 << 20


@dataclass(frozen=True)
class MethodInfo:
    name: str
    available: bool
    reason: str  # why not, when unavailable; a detail worth knowing otherwise
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "reason": self.reason}


@dataclass(frozen=True)
class WipePlan:
    """What a wipe will do, shown before it runs. `commands` are the exact external commands."""

    disk: Disk
    method: str
    actions: tuple[str, ...]  # every step in words, external commands shell-quoted
    commands: tuple[tuple[str, ...], ...] = ()
    secure: bool = False
    samples: int = DEFAULT_SAMPLES
    seed: int = 0  # picks the random sample blocks; also the random method's key
    notes: tuple[str, ...] = ()
    timeout: float | None = None  # for a long hardware erase
    controller: str = ""  # NVMe controller node, for sanitize-log polling
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def destructive_size(self) -> int:
        return self.disk.size

    def summary(self) -> list[str]:
        return self.render().splitlines()

    def command(self) -> list[str]:
        """The CLI command that does the same, for the log and for the technician to reuse."""
        disk = self.disk
        who = disk.by_id[0] if disk.by_id else disk.path
        serial = "".join(disk.serial.split())
        code = serial[-4:] if serial else disk.name
        return ["bootmedia", "wipe", who, "--method", self.method, "--confirm", code]

    def render(self) -> str:
        lines = [f"wipe {self.disk.label()}", f"method: {self.method} ({METHODS[self.method]})"]
        lines += [f"  {i}. {a}" for i, a in enumerate(self.actions, 1)]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk": self.disk.to_dict(),
            "method": self.method,
            "secure": self.secure,
            "actions": list(self.actions),
            "commands": [shlex.join(c) for c in self.commands],
            "notes": list(self.notes),
            "samples": self.samples,
            "seed": self.seed,
        }


def _sysfs(disk: Disk, rel: str) -> str:
    try:
        with open(f"/sys/class/block/{disk.name}/{rel}") as f:
            return f.read().strip()
    except OSError:
        return ""


def _probe_nvme(disk: Disk, runner: Any, controller: str | None) -> nvme.NvmeCaps | str:
    if disk.transport != "nvme":
        return "only for NVMe drives"
    if which("nvme") is None and runner is run:
        return "nvme-cli is not installed"
    try:
        return nvme.probe(disk.path, runner, controller)
    except BootmediaError as exc:
        return f"cannot identify the controller: {exc}"


def _probe_ata(disk: Disk, runner: Any) -> ata.AtaSecurity | str:
    if disk.transport == "usb":
        return "ATA security commands do not pass reliably through USB bridges"
    if disk.transport not in ("sata", "ata"):
        return "only for SATA/ATA drives"
    if which("hdparm") is None and runner is run:
        return "hdparm is not installed"
    try:
        return ata.parse_security(runner(ata.identify_command(disk.path)).stdout.decode())
    except BootmediaError as exc:
        return f"hdparm -I failed: {exc}"


def available_methods(
    disk: Disk, *, runner: Any = run, controller: str | None = None
) -> list[MethodInfo]:
    """Every method, each with whether it can run on this disk and why (not)."""
    infos = {name: MethodInfo(name, True, "", desc) for name, desc in METHODS.items()}

    def off(name: str, why: str) -> None:
        infos[name] = MethodInfo(name, False, why, METHODS[name])

    if which("wipefs") is None and runner is run:
        off("quick", "wipefs is not installed")
    if disk.transport == TRANSPORT:
        # Only writing bytes means anything for a file: the rest are commands to a device.
        for name in ("discard", *HARDWARE):
            off(name, "an image file, not a device")
        return list(infos.values())
    discard_max = _sysfs(disk, "queue/discard_max_bytes")
    if not discard_max or discard_max == "0":
        off("discard", "the device does not support discard (TRIM/UNMAP)")
    else:
        note = "--secure available" if disk.transport == "mmc" else "no --secure (eMMC/SD only)"
        infos["discard"] = MethodInfo("discard", True, note, METHODS["discard"])
    caps = _probe_nvme(disk, runner, controller)
    if isinstance(caps, str):
        off("nvme-format", caps)
        off("nvme-sanitize", caps)
    else:
        if not caps.format_supported:
            off("nvme-format", "the controller does not support Format NVM")
        else:
            kind = "crypto erase" if caps.crypto_erase else "user-data erase (no crypto erase)"
            infos["nvme-format"] = MethodInfo("nvme-format", True, kind, METHODS["nvme-format"])
        if not caps.sanitize:
            off("nvme-sanitize", "the controller does not support Sanitize")
        else:
            detail = "supports " + ", ".join(caps.sanitize)
            infos["nvme-sanitize"] = MethodInfo(
                "nvme-sanitize", True, detail, METHODS["nvme-sanitize"]
            )
    sec = _probe_ata(disk, runner)
    if isinstance(sec, str):
        off("ata-secure-erase", sec)
    elif sec.refusal():
        off("ata-secure-erase", sec.refusal() or "")
    else:
        kind = "enhanced erase" if sec.enhanced else "normal erase"
        minutes = sec.enhanced_minutes if sec.enhanced else sec.erase_minutes
        detail = f"{kind}, the drive estimates {minutes} min" if minutes else kind
        infos["ata-secure-erase"] = MethodInfo(
            "ata-secure-erase", True, detail, METHODS["ata-secure-erase"]
        )
    return list(infos.values())


def _partition_nodes(disk: Disk) -> list[str]:
    # An image file's partitions have no nodes: quick clears their edges instead (file_edges).
    return [] if disk.transport == TRANSPORT else [p.path for p in disk.partitions]


def file_edges(disk: Disk) -> list[tuple[int, int]]:
    """The first and last MiB of every partition of an image file: where the signatures that
    wipefs would remove through a partition node live (superblocks, boot sectors, NTFS's backup
    boot sector, the swap header)."""
    if disk.transport != TRANSPORT:
        return []
    edges = []
    for p in disk.partitions:
        edge = min(MIB, p.size)
        edges.append((p.start, edge))
        if p.size > edge:
            edges.append((p.start + p.size - edge, edge))
    return edges


def plan_wipe(
    disk: Disk,
    method: str,
    *,
    secure: bool = False,
    samples: int = DEFAULT_SAMPLES,
    runner: Any = run,
    controller: str | None = None,
    seed: int | None = None,
) -> WipePlan:
    """The plan for wiping `disk` with `method`; UsageError when the method cannot run there."""
    if method not in METHODS:
        raise UsageError(f"unknown wipe method {method!r}: choose one of {', '.join(METHODS)}")
    info = next(
        i for i in available_methods(disk, runner=runner, controller=controller) if i.name == method
    )
    if not info.available:
        raise UsageError(f"{method} is not available on {disk.label()}: {info.reason}")
    if secure and method != "discard":
        raise UsageError("--secure only applies to --method discard")
    if secure and disk.transport != "mmc":
        raise UsageError(
            f"secure discard is only supported on eMMC/SD (mmc) devices, not {disk.transport}"
        )
    seed = secrets.randbits(63) if seed is None else seed
    size = human_size(disk.size)
    commands: list[list[str]] = []
    actions: list[str] = []
    notes: list[str] = []
    timeout: float | None = None
    ctrl = ""
    params: dict[str, Any] = {}
    if method == "quick":
        for node in [*_partition_nodes(disk), disk.path]:
            commands.append(["wipefs", "--all", "--force", node])
        actions = [shlex.join(c) for c in commands]
        if file_edges(disk):
            actions.append("zero the first and the last MiB of every partition (signatures)")
        actions.append("zero the first and the last MiB (partition tables and the GPT backup)")
        notes.append("quick removes signatures and tables only: the data itself stays readable")
    elif method == "zero":
        actions.append(f"write zeros over all {size} (direct I/O), then flush the disk's cache")
    elif method == "random":
        actions.append(f"write a BLAKE3 keystream over all {size} (direct I/O), then flush")
    elif method == "discard":
        commands.append(["blkdiscard", *(["--secure"] if secure else []), "--force", disk.path])
        actions.append(shlex.join(commands[0]))
        notes.append("passes only if the device then reads back zeros; many SSDs do, some do not")
    elif method in ("nvme-format", "nvme-sanitize"):
        caps = nvme.probe(disk.path, runner, controller)
        ctrl = caps.controller
        params["lba_size"] = caps.lba_size
        if method == "nvme-format":
            commands.append(nvme.format_command(caps))
            if caps.ses_all_namespaces:
                notes.append(f"this controller erases EVERY namespace on {caps.controller}")
        else:
            commands.append(nvme.sanitize_command(caps))
            notes.append(f"sanitize erases every namespace on {caps.controller}")
            notes.append("sanitize continues in the drive after a power loss until it completes")
        actions.append(shlex.join(commands[0]))
        if method == "nvme-sanitize":
            actions.append(f"poll {shlex.join(nvme.sanitize_log_command(ctrl))} until it completes")
        timeout = 4 * 3600
    elif method == "ata-secure-erase":
        sec = _probe_ata(disk, runner)
        assert not isinstance(sec, str)
        commands.extend(ata.erase_commands(disk.path, sec))
        actions = [shlex.join(c) for c in commands]
        timeout = ata.timeout_for(sec)
        notes.append(f"the temporary password {ata.PASSWORD!r} is cleared by a successful erase")
    if disk.transport != TRANSPORT:
        actions.append("re-read the partition table so the kernel forgets the old partitions")
    if method in HARDWARE:
        actions.insert(0, "read a sample of blocks before the erase, to compare with afterwards")
    if method == "quick":
        actions.append("read back the first and last MiB: expect zeros, and no signature left")
    else:
        check = "the written pattern" if method == "random" else "zeros"
        check = "changed content" if method in HARDWARE else check
        actions.append(
            f"read back the first and last MiB and {samples} random blocks: expect {check}"
        )
    return WipePlan(
        disk=disk,
        method=method,
        actions=tuple(actions),
        commands=tuple(tuple(c) for c in commands),
        secure=secure,
        samples=samples,
        seed=seed,
        notes=tuple(notes),
        timeout=timeout,
        controller=ctrl,
        params=params,
    )
