"""Jobs for restore onto any disk (issue 10): disk-to-disk clone, and restoring only the
partitions the technician left ticked."""

from __future__ import annotations

from app.engine import DiskRow, ImageRow
from app.jobs import Job, Outcome, _command, _lines, _result_lines
from bootmedia.progress import Reporter, human_bytes


def plan_clone_job(source: DiskRow, target: DiskRow, *, verify: bool = True) -> Job:
    from bootmedia.clone import clone_disk, plan_clone

    plan = plan_clone(source.disk.path, target.disk.path, verify=verify)

    def execute(reporter: Reporter) -> Outcome:
        r = clone_disk(plan, reporter)
        lines = [
            f"{source.label()} copied onto {target.label()}",
            f"Written: {human_bytes(r.written)}",
        ]
        lines += [
            f"Partition {s.number} ({s.fstype}) shrunk to {human_bytes(s.new_size)}; overlay "
            f"used {human_bytes(s.overlay_used)} of {human_bytes(s.overlay_capacity)}"
            for s in r.shrinks
        ]
        if r.verified:
            return Outcome(True, "Clone finished: every byte written was read back", tuple(lines))
        return Outcome(True, "Clone finished (not verified: switched off)", tuple(lines))

    return Job(
        kind="clone",
        title=f"Clone {source.disk.name} onto {target.disk.name}",
        summary=_lines(plan),
        command=_command(plan),
        execute=execute,
        cancel_note=f"{target.disk.name} is marked incomplete; {source.disk.name} is unchanged.",
        confirm=target,
    )


def matching_partitions(image: ImageRow, target: DiskRow) -> list[tuple[int, str]]:
    """The image's partitions that can be restored one by one onto this disk (its table
    matches the image's), as (number, description); [] when the tables differ."""
    from bootmedia.layout.choose import restorable

    return restorable(image.repo, image.manifest, target.disk.path)


def plan_partitions_job(
    image: ImageRow, target: DiskRow, numbers: tuple[int, ...], *, verify: bool, afterwards: str
) -> Job:
    from bootmedia.layout.choose import apply_partitions, plan_partitions

    plan = plan_partitions(image.repo, image.manifest, target.disk.path, numbers, verify)

    def execute(reporter: Reporter) -> Outcome:
        results = apply_partitions(plan, reporter)
        lines = [f"Image {image.name}: partitions {', '.join(map(str, numbers))} restored"]
        for r in results:
            lines += _result_lines(r)
        lines += [f"Untouched: {n}" for n in plan.untouched]
        ok = all(r.verified for r in results) or not verify
        return Outcome(ok, "Restore finished" + ("" if ok else " but NOT verified"), tuple(lines))

    return Job(
        kind="restore",
        title=f"Restore partitions {','.join(map(str, numbers))} of {image.name}",
        summary=_lines(plan),
        command=_command(plan),
        execute=execute,
        cancel_note="The partition being written is incomplete; the others are as they were.",
        confirm=target,
        afterwards=afterwards,
    )
