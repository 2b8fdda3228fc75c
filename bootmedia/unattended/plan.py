"""Resolving an unattended job on this machine: the one disk its rule picks, the repository
that holds its image, and the guard against running it twice. The result is a frozen plan."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bootmedia.disks.discover import find_disks
from bootmedia.disks.model import Disk
from bootmedia.errors import BootmediaError
from bootmedia.net import credentials
from bootmedia.net.mount import connect, label
from bootmedia.net.url import is_url
from bootmedia.repo.store import Repository
from bootmedia.stick.data import RUN_DIR
from bootmedia.text import printable
from bootmedia.unattended.base import DATA_DIR, AlreadyDone, UnattendedError
from bootmedia.unattended.results import (
    JobResult,
    claim_job,
    find_success,
    machine_identity,
    target_record,
    write_result,
)
from bootmedia.unattended.rules import Refusal, default_refusal, parse_rule, select_target
from bootmedia.unattended.spec import JobSpec, load_job


@dataclass(frozen=True)
class UnattendedPlan:
    """A job bound to this machine: the exact disk and repository. What the countdown shows,
    with the plan protocol every job has (summary, command, to_dict)."""

    spec: JobSpec
    target: Disk
    repo: Path
    data_dir: Path | None

    def summary(self) -> list[str]:
        return [
            f"Unattended job from {printable(self.spec.source, 200)}",
            (
                f"Receive image {self.spec.image} from the multicast session; missed chunks "
                f"from {printable(label(self.repo), 200)}"
                if self.spec.action == "receive"
                else f"Restore image {self.spec.image} from {printable(label(self.repo), 200)}"
            ),
            f"onto {self.target.label()}",
            f"Verify: {'yes' if self.spec.verify else 'NO'}; afterwards: {self.spec.after}",
            *([self.spec.customize.describe()] if self.spec.customize else []),
        ]

    def describe(self) -> tuple[str, ...]:
        return tuple(self.summary())

    def command(self) -> list[str]:
        """The same restore from the CLI (what the technician could type instead)."""
        t = self.target
        ident = t.by_id[0] if t.by_id else t.path
        confirm = t.serial.strip() or (t.by_id[0].rsplit("/", 1)[-1] if t.by_id else t.name)
        if self.spec.action == "receive":
            argv = ["bootmedia", "receive", ident, "--fallback", label(self.repo)]
            argv += ["--image", self.spec.image, "--confirm", confirm]
            if self.spec.rdv:
                argv += ["--rdv", self.spec.rdv]
            if self.spec.interface:
                argv += ["--interface", self.spec.interface]
            return argv
        argv = [
            "bootmedia",
            "apply",
            label(self.repo),
            self.spec.image,
            ident,
            "--confirm",
            confirm,
        ]
        if self.spec.grow:
            argv.append("--grow")
        if not self.spec.verify:
            argv.append("--no-verify")
        return argv

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": asdict(self.spec),
            "target": target_record(self.target),
            "repo": label(self.repo),
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
            "command": self.command(),
        }


ResolvedJob = UnattendedPlan  # the name round 1's callers use


def find_repo(spec: JobSpec, data_dir: Path | None, has_image: Callable[[Path, str], bool]) -> Path:
    """The repository holding the job's image: the one named, else the only one that has it."""
    if spec.repo and is_url(spec.repo):  # a share or web server (bootmedia.net): mount it
        creds = data_dir / credentials.FILE_NAME if data_dir is not None else None
        try:
            path = Path(
                connect(spec.repo, credentials_file=creds if creds and creds.exists() else None)
            )
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
        with Repository.open(path) as repo:
            return any(m.name == name for m in repo.images())
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
    lock_dir: Path = RUN_DIR,
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
