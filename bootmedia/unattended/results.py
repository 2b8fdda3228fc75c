"""Results of unattended jobs on the stick (results/<time>-<machine>.json and last.json), and
the guard that reads them so a stick left in does not re-image the machine at every boot."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from bootmedia import __version__
from bootmedia.disks.model import Disk
from bootmedia.net.mount import label
from bootmedia.stick.data import RUN_DIR
from bootmedia.unattended.base import RESULTS_DIR
from bootmedia.unattended.spec import JobSpec

if TYPE_CHECKING:
    from bootmedia.unattended.plan import UnattendedPlan

log = logging.getLogger("bootmedia.unattended")


def machine_identity(dmi: Path = Path("/sys/class/dmi/id")) -> dict[str, str]:
    """What tells one laptop of a batch from the next: DMI vendor, product, serial, UUID."""
    ident = {"hostname": socket.gethostname()}
    for key, name in (
        ("vendor", "sys_vendor"),
        ("product", "product_name"),
        ("serial", "product_serial"),
        ("uuid", "product_uuid"),
    ):
        with contextlib.suppress(OSError):
            value = (dmi / name).read_text().strip()
            if value:
                ident[key] = value
    return ident


@dataclass(frozen=True)
class JobResult:
    status: str  # success, failed, cancelled
    verified: bool
    message: str
    started: float  # epoch seconds
    finished: float
    customize: dict[str, Any] | None = None  # what customize changed, each change read back


def result_document(
    job: UnattendedPlan | JobSpec, result: JobResult, machine: Mapping[str, str]
) -> dict[str, Any]:
    spec = job if isinstance(job, JobSpec) else job.spec
    doc: dict[str, Any] = {
        "bootmedia": __version__,
        "status": result.status,
        "verified": result.verified,
        "message": result.message,
        "job": {k: v for k, v in asdict(spec).items()},
        "machine": dict(machine),
        "started": _iso(result.started),
        "finished": _iso(result.finished),
        "seconds": round(result.finished - result.started, 1),
    }
    if result.customize is not None:
        doc["customize"] = result.customize
    if not isinstance(job, JobSpec):
        doc["repo"] = label(job.repo)
        doc["target"] = target_record(job.target)
    return doc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_result(
    data_dir: Path,
    job: UnattendedPlan | JobSpec,
    result: JobResult,
    machine: Mapping[str, str] | None = None,
) -> Path:
    """results/<time>-<machine>.json on the data partition, plus results/last.json.

    Written to a temporary name, fsynced, renamed and synced again: the machine powers off
    seconds later, and a stick pulled out then must still hold the whole file.
    """
    machine = dict(machine or machine_identity())
    doc = result_document(job, result, machine)
    who = machine.get("serial") or machine.get("uuid") or machine.get("hostname", "machine")
    if not isinstance(job, JobSpec):
        who = f"{who}-{job.target.serial or disk_key(job.target)}"
    stamp = datetime.fromtimestamp(result.finished, UTC).strftime("%Y%m%d-%H%M%S")
    directory = data_dir / RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}-{_safe(who)}.json"
    payload = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    for out in (path, directory / "last.json"):
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.sync()
    return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "machine"


def disk_key(disk: Disk) -> str:
    """What identifies a target across boots, for the "already done" guard: the serial, else the
    WWN, else the stable by-id name, else the bus path (the same slot in the same machine), else
    model and size. Never the kernel name, which moves between boots."""
    if disk.serial.strip():
        return f"serial:{disk.serial.strip()}"
    if disk.wwn.strip():
        return f"wwn:{disk.wwn.strip().lower().removeprefix('0x')}"
    if disk.by_id:
        return f"by-id:{disk.by_id[0].rsplit('/', 1)[-1]}"
    if disk.by_path:
        return f"by-path:{disk.by_path.rsplit('/', 1)[-1]}"
    return f"model:{disk.model.strip()}:{disk.size}"


def target_record(t: Disk) -> dict[str, Any]:
    return {
        "name": t.name,
        "path": t.path,
        "serial": t.serial,
        "wwn": t.wwn,
        "key": disk_key(t),
        "model": t.model,
        "size": t.size,
        "transport": t.transport,
        "label": t.label(),
    }


class _Job(msgspec.Struct):
    image: str = ""


class _Target(msgspec.Struct):
    serial: str = ""
    key: str = ""


class _Result(msgspec.Struct):
    """The part of a results/*.json the guard reads. Any other shape is skipped (and logged):
    a file someone edited or truncated is not a reason to crash, nor a reason to run twice."""

    status: str = ""
    job: _Job = msgspec.field(default_factory=_Job)
    target: _Target = msgspec.field(default_factory=_Target)
    machine: dict[str, str] = msgspec.field(default_factory=dict)


MAX_RESULT_FILE = 1 << 20


def _read_result(path: Path) -> _Result | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_RESULT_FILE + 1)
        if len(data) > MAX_RESULT_FILE:
            raise ValueError("too big")
        return msgspec.json.decode(data, type=_Result)
    except (OSError, ValueError, msgspec.DecodeError, RecursionError) as exc:
        log.warning("%s: not a result file bootmedia can read (%s); ignored", path, exc)
        return None


def find_success(
    data_dir: Path, spec: JobSpec, target: Disk, machine: Mapping[str, str]
) -> Path | None:
    """An earlier successful result of the same job on this machine's same disk, if any. The
    disk is matched by disk_key(), so a disk without a serial is guarded too."""
    directory = data_dir / RESULTS_DIR
    if not directory.is_dir():
        return None
    key = disk_key(target)
    for path in sorted(directory.glob("*.json"), reverse=True):
        if path.name == "last.json":
            continue
        doc = _read_result(path)
        if doc is None:
            continue
        same_disk = doc.target.key == key or (
            not doc.target.key and bool(target.serial) and doc.target.serial == target.serial
        )
        if (
            doc.status == "success"
            and doc.job.image == spec.image
            and same_disk
            and doc.machine.get("uuid") == machine.get("uuid")
            and doc.machine.get("serial") == machine.get("serial")
        ):
            return path
    return None


def claim_job(lock_dir: Path = RUN_DIR) -> bool:
    """Only one console runs the job: the TUI starts on tty1 and on ttyS0 at once.

    True for the first caller in this boot (/run is empty at each boot), False for the others.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock_dir / "unattended.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True
