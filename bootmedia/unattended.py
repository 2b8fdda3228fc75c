"""Unattended jobs: a stick (or a netboot entry) that restores a machine with no questions asked.

A job comes from the kernel command line (`bootmedia.job=restore bootmedia.image=NAME
bootmedia.target=RULE bootmedia.after=poweroff`) or from `bootmedia.toml` on the stick's data
partition::

    [job]
    action = "restore"
    image = "golden"          # image name in the repository
    repo = "images"           # optional: repository directory on the data partition
    target = "internal"       # a rule, see parse_rule()
    after = "poweroff"        # poweroff | reboot | stay
    countdown = 10            # seconds the technician has to cancel
    verify = true
    grow = true               # grow the last partition to fill a bigger disk

The kernel command line wins when it names a job; `bootmedia.job=off` ignores the stick's file.

The target is chosen by a rule, never by a kernel name (sda and nvme0n1 change between boots).
A rule that matches no disk or more than one stops the job with a message naming the disks: it
never guesses. The stick itself is never a candidate.

Everything here is a pure function of its inputs (the command line text, the file, the disk
list) except load_job()/find_job() reading them, write_result() and run_restore(). The TUI shows
resolve_job()'s answer with a countdown, then runs it; the result goes to the data partition as
JSON so a batch of machines leaves a record on the stick.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import json
import logging
import os
import re
import shlex
import socket
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootmedia import __version__
from bootmedia.customize.unattended import CMDLINE_KEYS as CUSTOMIZE_CMDLINE_KEYS
from bootmedia.customize.unattended import CustomizeSpec
from bootmedia.errors import BootmediaError
from bootmedia.net import credentials
from bootmedia.net.mount import connect, label
from bootmedia.net.url import is_url

if TYPE_CHECKING:
    from bootmedia.disks.model import Disk
    from bootmedia.progress import Reporter

log = logging.getLogger("bootmedia.unattended")

DATA_DIR = Path("/run/bootmedia/data")  # where the live system mounts LABEL=BOOTMEDIA
DATA_LABEL = "BOOTMEDIA"
LIVE_LABEL = "BOOTMEDIA_LIVE"  # the ISO9660 volume id of the live system itself
JOB_FILE = "bootmedia.toml"
RESULTS_DIR = "results"

ACTIONS = ("restore",)
AFTER = ("poweroff", "reboot", "stay")
# Buses that never hold the machine's own disk.
EXTERNAL_TRANSPORTS = ("usb", "loop", "file", "nbd", "ieee1394")


class UnattendedError(BootmediaError):
    """The job cannot run as written: the message says why and what to change."""


class AlreadyDone(UnattendedError):
    """This machine's target already received this job (a reboot loop with the stick still in)."""


# ---------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobSpec:
    """An unattended job as written, before any disk is chosen."""

    action: str
    image: str
    target: str
    after: str = "stay"
    repo: str = ""  # relative to the data partition, or absolute; "" = search it
    verify: bool = True
    countdown: int = 10
    grow: bool = True
    source: str = ""  # where it came from, for messages: "kernel command line", a file path
    customize: CustomizeSpec | None = None  # [job.customize]: see bootmedia/customize/unattended.py

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> JobSpec:
        known = {
            "action",
            "image",
            "target",
            "after",
            "repo",
            "verify",
            "countdown",
            "grow",
            "customize",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise UnattendedError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        action = str(data.get("action", "")).strip().lower()
        if action not in ACTIONS:
            raise UnattendedError(
                f"{source}: job {action or '(none)'!r} is not an unattended job "
                f"(choose one of: {', '.join(ACTIONS)})"
            )
        image = str(data.get("image", "")).strip()
        if not image:
            raise UnattendedError(f"{source}: a restore job needs an image name")
        target = str(data.get("target", "")).strip()
        parse_rule(target, source)  # fail now, before any countdown
        after = str(data.get("after", "stay")).strip().lower()
        if after not in AFTER:
            raise UnattendedError(f"{source}: after={after!r}: choose one of {', '.join(AFTER)}")
        verify = _flag(data.get("verify", True))
        grow = _flag(data.get("grow", True))
        try:
            countdown = int(data.get("countdown", 10))
        except (TypeError, ValueError):
            raise UnattendedError(f"{source}: countdown must be a number of seconds") from None
        if not 0 <= countdown <= 3600:
            raise UnattendedError(f"{source}: countdown must be between 0 and 3600 seconds")
        customize = None
        if "customize" in data:
            try:
                customize = CustomizeSpec.from_dict(data["customize"], source)
            except BootmediaError as exc:
                raise UnattendedError(str(exc)) from None
            if not verify:
                raise UnattendedError(f"{source}: customize runs after a verified restore only")
        return cls(
            action=action,
            image=image,
            target=target,
            after=after,
            repo=str(data.get("repo", "")).strip(),
            verify=verify,
            countdown=countdown,
            grow=grow,
            source=source,
            customize=customize,
        )

    def describe(self) -> str:
        verify = "verify" if self.verify else "no verification"
        return (
            f"{self.action} {self.image} onto the disk matching {self.target!r}, {verify}, "
            f"then {self.after}"
        )


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "no", "false", "off")
    return bool(value)


def parse_cmdline(text: str) -> dict[str, str]:
    """The bootmedia.* parameters of a kernel command line, without the prefix.

    Quoted values work the way the kernel passes them: "bootmedia.target=model:Samsung SSD*".
    """
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    params: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.startswith("bootmedia."):
            params[key.removeprefix("bootmedia.")] = value
    return params


def job_from_cmdline(text: str) -> JobSpec | bool | None:
    """The job the kernel command line names; None if it names none; False for job=off."""
    params = parse_cmdline(text)
    job = params.get("job", "").strip().lower()
    if not job:
        return None
    if job in ("off", "none", "0", "no"):
        return False
    data: dict[str, Any] = {"action": job}
    for key in ("image", "target", "after", "repo", "verify", "countdown", "grow"):
        if key in params:
            data[key] = params[key]
    custom = {k: params[k] for k in CUSTOMIZE_CMDLINE_KEYS if k in params}
    if custom:
        data["customize"] = custom
    return JobSpec.from_dict(data, "kernel command line")


def job_from_toml(text: str, source: str) -> JobSpec | None:
    """The job in a bootmedia.toml; None when the file has no job in it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UnattendedError(f"{source}: not valid TOML: {exc}") from None
    job = data.get("job", data)
    if not isinstance(job, dict) or not job:
        return None
    if "action" not in job and not set(job) & {"image", "target"}:
        return None
    return JobSpec.from_dict(job, source)


def load_job(cmdline: str, data_dir: Path | None) -> JobSpec | None:
    """The command line's job, else the data partition's bootmedia.toml, else None."""
    from_cmdline = job_from_cmdline(cmdline)
    if from_cmdline is False:
        return None
    if isinstance(from_cmdline, JobSpec):
        return from_cmdline
    if data_dir is None:
        return None
    path = data_dir / JOB_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnattendedError(f"{path}: cannot read: {exc.strerror}") from None
    return job_from_toml(text, str(path))


# ---------------------------------------------------------------- target rules


@dataclass(frozen=True)
class Condition:
    key: str  # internal, serial, model, transport, wwn, by-id, size
    value: str = ""

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
        if self.key == "size":
            op, number = _SIZE_RE.fullmatch(self.value).groups()  # type: ignore[union-attr]
            limit = parse_size(number)
            return disk.size >= limit if op == ">=" else disk.size <= limit
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


_SIZE_RE = re.compile(r"(>=|<=)\s*([0-9.]+\s*[kKmMgGtT]?[bB]?)")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_VALUED = ("serial", "model", "transport", "wwn", "by-id", "size")
RULE_HELP = (
    "internal (the one internal, non-removable disk), serial:SERIAL, model:GLOB, "
    "transport:nvme|sata|..., wwn:WWN, by-id:NAME, size:>=100G; join with ',' to combine"
)


def parse_size(text: str) -> int:
    """Decimal units, the way disk labels print them: 500G = 500 * 10**9 bytes."""
    m = re.fullmatch(r"([0-9.]+)\s*([kKmMgGtT]?)[bB]?", text.strip())
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


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
            if key == "size" and not _SIZE_RE.fullmatch(value):
                raise UnattendedError(
                    f"{source}: size rule {value!r}: write size:>=100G or size:<=2T"
                )
            conditions.append(Condition(key, value))
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


Refusal = Callable[["Disk"], "str | None"]


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
    """The disk-safety rules of bootmedia.disks, where they exist (None: writable)."""
    try:
        check_writable = importlib.import_module("bootmedia.disks").check_writable
    except (ImportError, AttributeError):
        return None
    try:
        check_writable(disk)
    except BootmediaError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- resolving the job


@dataclass(frozen=True)
class ResolvedJob:
    """A job bound to this machine: the exact disk and repository. What the countdown shows."""

    spec: JobSpec
    target: Disk
    repo: Path
    data_dir: Path | None

    def describe(self) -> tuple[str, ...]:
        return (
            f"Unattended job from {self.spec.source}",
            f"Restore image {self.spec.image} from {label(self.repo)}",
            f"onto {self.target.label()}",
            f"Verify: {'yes' if self.spec.verify else 'NO'}; afterwards: {self.spec.after}",
            *([self.spec.customize.describe()] if self.spec.customize else []),
        )


def find_repo(spec: JobSpec, data_dir: Path | None, has_image: Callable[[Path, str], bool]) -> Path:
    """The repository holding the job's image: the one named, else the only one that has it."""
    if spec.repo and is_url(spec.repo):  # a share or web server (bootmedia.net): mount it
        creds = data_dir / credentials.FILE_NAME if data_dir is not None else None
        try:
            path = Path(
                connect(spec.repo, credentials_file=creds if creds and creds.exists() else None)
            )
            from bootmedia.repo.store import Repository

            Repository.open(path).close()  # unreachable or not a repository: say which
        except BootmediaError as exc:
            raise UnattendedError(f"repo {spec.repo}: {exc}") from None
        if not has_image(path, spec.image):
            raise UnattendedError(f"{spec.repo} holds no image named {spec.image!r}")
        return path
    if spec.repo:
        path = Path(spec.repo)
        if not path.is_absolute():
            if data_dir is None:
                raise UnattendedError(
                    f"repo {spec.repo!r} is relative but no data partition is mounted"
                )
            path = data_dir / path
        if not has_image(path, spec.image):
            raise UnattendedError(f"{path} holds no image named {spec.image!r}")
        return path
    if data_dir is None:
        raise UnattendedError(
            "no data partition (LABEL=BOOTMEDIA) is mounted and the job names no repo"
        )
    candidates = [data_dir, *(p for p in sorted(data_dir.iterdir()) if p.is_dir())]
    holders = [p for p in candidates if has_image(p, spec.image)]
    if not holders:
        raise UnattendedError(f"no repository on {data_dir} holds an image named {spec.image!r}")
    if len(holders) > 1:
        listed = ", ".join(str(p) for p in holders)
        raise UnattendedError(
            f"image {spec.image!r} is in several repositories ({listed}); set repo="
        )
    return holders[0]


def repo_has_image(path: Path, name: str) -> bool:
    """Whether the engine's repository at path has an image called name."""
    if not path.is_dir():
        return False
    try:
        from bootmedia.repo.store import Repository

        repo = Repository.open(path)
        return any(getattr(m, "name", None) == name for m in repo.images())
    except (BootmediaError, OSError):
        return False


def resolve_job(
    spec: JobSpec,
    disks: Sequence[Disk],
    *,
    data_dir: Path | None = None,
    refusal: Refusal | None = default_refusal,
    has_image: Callable[[Path, str], bool] = repo_has_image,
    machine: Mapping[str, str] | None = None,
) -> ResolvedJob:
    """Bind a job to this machine. Raises UnattendedError (with a message for the screen) when
    the target rule does not pick exactly one writable disk, the image is missing, or the job
    already succeeded on this very disk (AlreadyDone: the machine rebooted into the stick)."""
    rule = parse_rule(spec.target, spec.source)
    target = select_target(rule, disks, refusal)
    repo = find_repo(spec, data_dir, has_image)
    if spec.customize is not None:
        try:  # a CSV or hook missing from the stick stops the job before the countdown
            spec.customize.options(repo=repo, data_dir=data_dir, image=spec.image)
        except BootmediaError as exc:
            raise UnattendedError(str(exc)) from None
    if data_dir is not None:
        previous = find_success(data_dir, spec, target, machine or machine_identity())
        if previous is not None:
            raise AlreadyDone(
                f"{spec.image} was already restored onto {target.label()} ({previous.name}); "
                "not running it again. Remove the stick, or delete that result file to repeat."
            )
    return ResolvedJob(spec=spec, target=target, repo=repo, data_dir=data_dir)


def find_job(
    disks: Sequence[Disk] | None = None,
    *,
    cmdline_path: Path = Path("/proc/cmdline"),
    data_dir: Path | None = None,
    lock_dir: Path = Path("/run/bootmedia"),
) -> ResolvedJob | None:
    """The live system's entry point: read the command line and the stick, resolve the job.

    Returns None when there is no job. Raises UnattendedError when there is one that cannot run,
    after recording that on the data partition (status "stopped").
    """
    if data_dir is None and DATA_DIR.is_dir() and os.path.ismount(DATA_DIR):
        data_dir = DATA_DIR
    try:
        cmdline = cmdline_path.read_text()
    except OSError:
        cmdline = ""
    spec = load_job(cmdline, data_dir)
    if spec is None:
        return None
    if disks is None:
        from bootmedia.disks.discover import find_disks

        disks = find_disks()
    try:
        return resolve_job(spec, disks, data_dir=data_dir)
    except AlreadyDone:
        raise
    except UnattendedError as exc:
        # A batch operator walks the room afterwards: the stick says which machine stopped, and
        # why. Only one console records it (both look for the job).
        if data_dir is not None and claim_job(lock_dir):
            now = time.time()
            with contextlib.suppress(OSError):
                write_result(data_dir, spec, JobResult("stopped", False, str(exc), now, now))
        raise


# ---------------------------------------------------------------- results


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
    job: ResolvedJob | JobSpec, result: JobResult, machine: Mapping[str, str]
) -> dict[str, Any]:
    spec = job.spec if isinstance(job, ResolvedJob) else job
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
    if isinstance(job, ResolvedJob):
        t = job.target
        doc["repo"] = label(job.repo)
        doc["target"] = {
            "name": t.name,
            "path": t.path,
            "serial": t.serial,
            "model": t.model,
            "size": t.size,
            "transport": t.transport,
            "label": t.label(),
        }
    return doc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_result(
    data_dir: Path,
    job: ResolvedJob | JobSpec,
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
    if isinstance(job, ResolvedJob) and job.target.serial:
        who = f"{who}-{job.target.serial}"
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


def find_success(
    data_dir: Path, spec: JobSpec, target: Disk, machine: Mapping[str, str]
) -> Path | None:
    """An earlier successful result of the same job on this machine's same disk, if any."""
    directory = data_dir / RESULTS_DIR
    if not directory.is_dir() or not target.serial:
        return None
    for path in sorted(directory.glob("*.json"), reverse=True):
        if path.name == "last.json":
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (
            doc.get("status") == "success"
            and doc.get("job", {}).get("image") == spec.image
            and doc.get("target", {}).get("serial") == target.serial
            and doc.get("machine", {}).get("uuid") == machine.get("uuid")
            and doc.get("machine", {}).get("serial") == machine.get("serial")
        ):
            return path
    return None


# ---------------------------------------------------------------- running it


def run_restore(job: ResolvedJob, reporter: Reporter) -> JobResult:
    """Restore the image onto the target with the engine, with no prompt. Never raises for a
    failed job: the failure becomes the result, because it must reach the data partition."""
    from bootmedia.errors import Cancelled

    started = time.time()
    try:
        from bootmedia.apply import apply_image, plan_apply
        from bootmedia.customize.unattended import prepare_customize, run_customize

        plan = plan_apply(
            job.repo, job.spec.image, job.target.path, grow=job.spec.grow, verify=job.spec.verify
        )
        custom = None
        if job.spec.customize is not None:  # checked before the first write, like the rest
            custom = prepare_customize(job.spec.customize, job.repo, job.data_dir, plan.image)
        outcome = apply_image(plan, reporter)
    except Cancelled as exc:
        return JobResult("cancelled", False, str(exc), started, time.time())
    except BootmediaError as exc:
        return JobResult("failed", False, str(exc), started, time.time())
    except Exception as exc:  # a bug; still a result on the stick, not a silent machine
        log.exception("unattended restore failed")
        return JobResult("failed", False, f"internal error: {exc!r}", started, time.time())
    verified = bool(getattr(outcome, "verified", False))
    if job.spec.verify and not verified:
        return JobResult(
            "failed", False, "restore finished but was NOT verified", started, time.time()
        )
    message = "restored and verified" if verified else "restored (verification switched off)"
    if custom is None:
        return JobResult("success", verified, message, started, time.time())
    try:
        done = run_customize(custom, job.target.path, reporter)
    except BootmediaError as exc:
        return JobResult(
            "failed", verified, f"{message}, but customize FAILED: {exc}", started, time.time()
        )
    message += f"; customized: {done.summary_line()}"
    return JobResult("success", verified, message, started, time.time(), done.to_dict())


def after_command(after: str) -> list[str] | None:
    """The command that ends an unattended run: systemctl poweroff/reboot, or None to stay."""
    return {"poweroff": ["systemctl", "poweroff"], "reboot": ["systemctl", "reboot"]}.get(after)


def claim_job(lock_dir: Path = Path("/run/bootmedia")) -> bool:
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
