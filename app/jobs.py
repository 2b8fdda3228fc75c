"""Jobs as the UI runs them: a plan shown on the summary screen, then a run with a Reporter.

Each builder calls the engine's plan function (in a thread worker: plans read disks and
repositories) and wraps the plan in a Job. A Job's run() turns the engine's result into an
Outcome, the data the result screen shows. Cancelled and BootmediaError become Outcomes too;
anything else is a bug and travels to the app's one worker-failure handler.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine import DiskRow, ImageRow
from bootmedia.errors import BootmediaError, Cancelled
from bootmedia.progress import Reporter, human_bytes, human_duration
from bootmedia.text import plural


@dataclass(frozen=True)
class Outcome:
    ok: bool
    title: str
    lines: tuple[str, ...] = ()
    cancelled: bool = False
    report_path: str = ""
    error: str = ""  # set when the job crashed (a bug): the flow shows the error screen


@dataclass(frozen=True)
class Job:
    kind: str  # restore, capture, wipe, partition, verify
    title: str  # "Restore golden onto loop3"
    summary: tuple[str, ...]  # exactly what will happen, for the summary screen
    command: str  # the equivalent CLI command
    execute: Callable[[Reporter], Outcome]
    cancel_note: str  # what a cancel leaves behind
    confirm: DiskRow | None = None  # the disk the technician must confirm by typing
    # What the progress total counts, when it is not simply the data ("Done 37 MB of 111 MB"
    # while writing a 37 MB image: each byte is checked, written and read back).
    work_note: str = ""
    afterwards: str = "stay"  # stay, reboot, poweroff
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, reporter: Reporter) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self.execute(reporter)
        except Cancelled as exc:
            return Outcome(
                False,
                f"{self.kind.capitalize()} cancelled",
                (str(exc), self.cancel_note),
                cancelled=True,
            )
        except BootmediaError as exc:
            return Outcome(False, f"{self.kind.capitalize()} failed", (str(exc),))
        took = human_duration(time.monotonic() - started)
        return Outcome(
            outcome.ok,
            outcome.title,
            (*outcome.lines, f"Time: {took}"),
            outcome.cancelled,
            outcome.report_path,
        )


def _lines(plan: Any) -> tuple[str, ...]:
    summary = getattr(plan, "summary", None)
    if callable(summary):
        result = summary()
        return tuple(result.splitlines() if isinstance(result, str) else result)
    return (str(plan),)


def _command(plan: Any) -> str:
    """The plan's equivalent CLI command as one line: plans return an argv list (rendered with
    shlex.join, so it pastes into a shell) or, in older plans, the line itself."""
    command = getattr(plan, "command", None)
    if not callable(command):
        return ""
    argv = command()
    return shlex.join(str(a) for a in argv) if isinstance(argv, list | tuple) else str(argv)


def _rate(nbytes: int, seconds: float) -> str:
    return f"{human_bytes(nbytes / seconds)}/s" if seconds > 0 else "-"


# ---------------------------------------------------------------- restore


def plan_restore(
    image: ImageRow,
    target: DiskRow,
    *,
    grow: bool,
    verify: bool,
    afterwards: str,
    check_first: bool = True,
) -> Job:
    from bootmedia.apply import plan_apply

    # An image file cannot have its filesystems resized (no block device for the tools): keep
    # the image's layout when it fits as it is, as the demo lab without root always did.
    fits = target.disk.size >= image.manifest.required_size
    layout = "keep" if target.disk.transport == "file" and fits else None
    plan = plan_apply(
        image.repo,
        image.name,
        target.disk.path,
        grow=grow,
        verify=verify,
        layout=layout,
        check_first=check_first,
    )
    return restore_job(plan, image, target, verify=verify, afterwards=afterwards)


def restore_job(
    plan: Any, image: ImageRow, target: DiskRow, *, verify: bool, afterwards: str
) -> Job:
    from bootmedia.apply import apply_image

    def execute(reporter: Reporter) -> Outcome:
        result = apply_image(plan, reporter)
        verified = bool(getattr(result, "verified", False))
        lines = [f"Image {image.name} written to {target.label()}"]
        lines += _result_lines(result)
        if verify and verified and isinstance(getattr(result, "written", None), int):
            # Next to "Written:", so the two numbers can be compared at a glance.
            lines.insert(2, f"Read back and checked: {human_bytes(result.written)}")
        if verify and verified:
            return Outcome(
                True, "Restore finished: every byte written was read back and checked", tuple(lines)
            )
        if verify:
            return Outcome(False, "Restore finished but NOT verified", tuple(lines))
        return Outcome(
            True, "Restore finished (not verified: verification was switched off)", tuple(lines)
        )

    return Job(
        kind="restore",
        title=f"Restore {image.name} onto {target.disk.name}",
        summary=_lines(plan),
        command=_command(plan),
        execute=execute,
        cancel_note=f"{target.disk.name} is marked incomplete: it will not boot until restored again.",
        confirm=target,
        afterwards=afterwards,
        work_note=_restore_work(plan),
    )


def _restore_work(plan: Any) -> str:
    size = getattr(plan, "write_bytes", None)
    if not isinstance(size, int) or not size:
        return ""
    parts = (["checked first"] if getattr(plan, "check_first", False) else []) + ["written"]
    parts += ["read back"] if getattr(plan, "verify", False) else []
    if len(parts) == 1:
        return ""
    return f"The total counts the {human_bytes(size)} of data {len(parts)} times: " + (
        ", ".join(parts[:-1]) + " and " + parts[-1] + "."
    )


def _result_lines(result: Any) -> list[str]:
    lines = []
    written = getattr(result, "bytes_written", None) or getattr(result, "written", None)
    seconds = getattr(result, "seconds", None)
    if isinstance(written, int):
        lines.append(f"Written: {human_bytes(written)}")
        if isinstance(seconds, int | float) and seconds:
            lines.append(f"Throughput: {_rate(written, seconds)}")
    for note in getattr(result, "notes", ()) or ():
        lines.append(str(note))
    return lines


# ---------------------------------------------------------------- capture


def plan_capture_job(
    source: DiskRow, repo_path: Path, name: str, description: str, level: int
) -> Job:
    from bootmedia.capture import capture_image, plan_capture

    plan = plan_capture(source.disk.path, repo_path, name, description=description, level=level)

    def execute(reporter: Reporter) -> Outcome:
        r = capture_image(plan, reporter)
        saved = max(0, r.stored_bytes - r.new_bytes)
        lines = (
            f"Image {name} captured from {source.label()}",
            f"Repository: {repo_path}",
            # The summary said "Total to read": say how much of that was data, not zeros.
            f"Read: {human_bytes(plan.total_bytes)}, of which data {human_bytes(r.data_bytes)}"
            " (blocks of zeros are not stored)",
            f"Stored (compressed): {human_bytes(r.stored_bytes)}",
            f"New in the repository: {human_bytes(r.new_bytes)}",
            f"Saved by deduplication: {human_bytes(saved)}",
            f"Throughput: {human_bytes(r.rate)}/s",
        )
        return Outcome(True, f"Capture finished: image {name} is in the repository", lines)

    return Job(
        kind="capture",
        title=f"Capture {source.disk.name} as {name}",
        summary=_lines(plan),
        command=_command(plan),
        execute=execute,
        cancel_note=f"No image {name} will be listed; chunks already stored are reused next time.",
    )


# ---------------------------------------------------------------- verify


def plan_verify(repo_path: Path, image: ImageRow | None) -> Job:
    from bootmedia.verify import plan_verify as plan_engine_verify
    from bootmedia.verify import verify_image

    plan = plan_engine_verify(repo_path, image.name if image else None)
    what = plan.what

    def execute(reporter: Reporter) -> Outcome:
        started = time.monotonic()
        result = verify_image(plan, reporter)
        took = time.monotonic() - started
        checked = f"{result.chunks} chunks, {human_bytes(result.bytes)} read and checked"
        # The image's own size, where it differs: a chunk the image holds twice is checked once.
        holds = image.manifest.stats.data_bytes if image is not None else 0
        about = [
            f"Throughput: {_rate(result.bytes, took)}",
            *(
                [
                    f"The image holds {human_bytes(holds)} of data; a chunk it repeats is checked once."
                ]
                if holds and human_bytes(holds) != human_bytes(result.bytes)
                else []
            ),
        ]
        if result.ok:
            return Outcome(True, f"Intact: {what}", (checked, *about, *result.notes))
        lines = [f"{plural(result.damaged_count, 'damaged place')}; {checked}:"]
        lines += [f"  {d}" for d in result.damaged]
        if result.damaged_count > len(result.damaged):
            lines.append(
                f"  ... and {result.damaged_count - len(result.damaged)} more (see the log)"
            )
        return Outcome(False, f"DAMAGED: {what}", (*lines, *about, *result.notes))

    return Job(
        kind="verify",
        title=f"Verify {what}",
        summary=_lines(plan),
        command=_command(plan),
        execute=execute,
        cancel_note="Nothing was changed.",
    )


def _now_on(target: DiskRow) -> list[str]:
    """What is on the disk now, in the restore plan's words: the technician sees what is
    about to go before typing the serial (wipe and partition plans only say what they do)."""
    from bootmedia.text import printable

    lines = [f"On the disk now: {target.partitions_text()}"]
    for p in target.disk.partitions:
        desc = " ".join(x for x in (p.fstype, p.label and f"'{printable(p.label, 40)}'") if x)
        lines.append(f"  - {p.name} {human_bytes(p.size)} {desc}".rstrip())
    return lines


def _with_now_on(summary: tuple[str, ...], target: DiskRow) -> tuple[str, ...]:
    return (*summary[:1], *_now_on(target), *summary[1:])


# ---------------------------------------------------------------- wipe


def wipe_methods(target: DiskRow) -> list[tuple[str, str, str | None]]:
    """(method, description, reason it is unavailable or None) for the method picker."""
    from bootmedia.wipe import available_methods

    return [
        (
            i.name,
            f"{i.description}" + (f" ({i.reason})" if i.available and i.reason else ""),
            None if i.available else i.reason,
        )
        for i in available_methods(target.disk)
    ]


def plan_wipe_job(target: DiskRow, method: str, report_dir: Path) -> Job:
    from bootmedia.wipe import plan_wipe, wipe_disk

    plan = plan_wipe(target.disk, method)
    disk = target.disk

    def execute(reporter: Reporter) -> Outcome:
        report = wipe_disk(plan, reporter)
        _, text_path = report.write(report_dir)
        lines = tuple(report.to_text().splitlines())
        title = f"Wipe of {disk.name}: {report.status}"
        return Outcome(
            report.ok,
            title,
            lines,
            cancelled=report.status == "CANCELLED",
            report_path=str(text_path),
        )

    return Job(
        kind="wipe",
        title=f"Wipe {disk.name} ({method})",
        summary=_with_now_on(_lines(plan), target),
        command=_command(plan),
        execute=execute,
        cancel_note=f"{disk.name} is partly erased; the report says how far the wipe got.",
        confirm=target,
    )


# ---------------------------------------------------------------- partition


def partition_layouts(target: DiskRow) -> list[tuple[str, str, str | None]]:
    from bootmedia.partition import LAYOUTS

    return [(name, description, None) for name, description in LAYOUTS.items()]


def plan_partition_job(target: DiskRow, layout: str) -> Job:
    from bootmedia.partition import apply_partition, plan_partition

    plan = plan_partition(target.disk, layout)
    disk = target.disk

    def execute(reporter: Reporter) -> Outcome:
        result = apply_partition(plan, reporter)
        lines = (f"{target.label()} now has the {layout} layout:", *result.lines())
        return Outcome(True, f"Partitioned {disk.name} ({layout}), checked", lines)

    return Job(
        kind="partition",
        title=f"Partition {disk.name} ({layout})",
        summary=_with_now_on(_lines(plan), target),
        command=_command(plan),
        execute=execute,
        cancel_note=f"{disk.name} may be left without a valid partition table.",
        confirm=target,
    )


# ---------------------------------------------------------------- make the stick


STICK_FILESYSTEMS = [
    ("exfat", "exFAT data partition: Windows and macOS read it too", None),
    ("ext4", "ext4 data partition", None),
    ("none", "no data partition (images go elsewhere)", None),
]


def plan_stick_job(iso_path: Path, target: DiskRow, data_fs: str) -> Job:
    """Write the live ISO to the stick, read it back, add the BOOTMEDIA data partition."""
    from bootmedia.disks import check_writable
    from bootmedia.stick import inspect_iso, make_stick, plan_stick

    disk = target.disk
    if disk.transport == "file":
        raise BootmediaError(
            f"{disk.name}: an image file, not a stick (run the demo as root for loop devices)"
        )
    plan = plan_stick(inspect_iso(iso_path), disk, data_fs)

    def execute(reporter: Reporter) -> Outcome:
        check_writable(disk)  # again, right before the first write
        result = make_stick(plan, reporter)
        return Outcome(True, f"Stick ready: {iso_path.name} written and read back", result.lines)

    return Job(
        kind="make stick",
        title=f"Make a bootmedia stick on {disk.name}",
        summary=_lines(plan),
        command=_command(plan),
        execute=execute,
        cancel_note=f"{disk.name} will not boot: make the stick again.",
        confirm=target,
    )
