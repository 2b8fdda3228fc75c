#!/usr/bin/env python3
"""Restore onto a smaller disk (issue 10): the benchmark disk onto a disk 60% of its size.

    sudo flock /work/locks/bench.lock .venv/bin/python bench/bench_disk.py [--size-gib 3]

Builds bench.py's disk (ESP + ext4 of real system files + NTFS + swap, stale data in the free
space; the ext4 filled to --fill so that its data fits in 60%), captures it once, then times,
each from a cold page cache, in the same run:

  same-size   bootmedia apply onto a disk of the source's size (+ read-back verify)
  60%         bootmedia apply onto a disk 60% of the size (--layout fit: ext4 shrunk with
              resize2fs and NTFS with ntfsresize in views of the image, + read-back verify)
  clonezilla  what a technician does today: shrink a copy of the source GParted-style
              (resize2fs / ntfsresize, move the partitions after them, shrink the table),
              capture it with partclone | zstd -T0, restore it with zstd -dc | partclone.restore
              (no verify). Copying the source first is timed separately: on site the
              technician shrinks the source itself, which we must not do here.
  clone       bootmedia clone onto a disk of the source's size (+ read-back verify)
  partclone   the reference disk-to-disk copy: the table with sfdisk, then partclone.<fs> -b
              (device to device) for each filesystem, mkswap (no verify)

Reports wall and CPU seconds, ratios within this run, the largest overlay the shrinks used
and the view servers' peak memory. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import build_disk, cold, sh  # noqa: E402
from bootmedia import lab  # noqa: E402
from bootmedia.fs import PARTCLONE, min_size  # noqa: E402
from bootmedia.table import read_table  # noqa: E402

MiB = 1 << 20
FS = {1: "vfat", 2: "ext4", 3: "ntfs"}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Wall seconds and CPU seconds (of the child processes) of fn."""
    cold()
    c, t = children_cpu(), time.perf_counter()
    fn()
    os.sync()
    return time.perf_counter() - t, children_cpu() - c


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr}")
    return proc.stdout


def clonezilla_workaround(copy: str, dst: str, cz: Path, target_size: int) -> dict[str, float]:
    """Shrink the copy's ext4 and NTFS as GParted would, move NTFS and swap down behind the
    shrunk ext4, shrink the table; then partclone | zstd each partition and restore it."""
    res: dict[str, float] = {}
    t = read_table(copy)
    assert t is not None
    p = {x.number: x for x in t.partitions}
    ss = t.sector_size
    mib = MiB // ss
    fixed = p[1].size + p[4].size
    room = target_size // ss - p[1].start - fixed - 4 * mib - 40
    ext_min = (min_size(f"{copy}p2", "ext4") or 0) // ss
    ntfs_min = (min_size(f"{copy}p3", "ntfs") or 0) // ss
    # the same shares bootmedia's planner gives them: proportional, floored at the minimum
    total = p[2].size + p[3].size
    new3 = max(ntfs_min + 16 * mib, room * p[3].size // total) // mib * mib
    new2 = (room - new3) // mib * mib
    assert new2 > ext_min, "target too small for the workaround too"

    def shrink() -> None:
        sh(f"e2fsck -f -p {copy}p2")
        sh(f"resize2fs {copy}p2 {new2 * ss // 1024}K")
        sh(f"echo y | ntfsresize --force --no-progress-bar -s {new3 * ss} {copy}p3")
        # ntfsresize marks the volume for chkdsk; partclone.ntfs refuses it until cleared
        sh(f"ntfsfix -d {copy}p3")
        # GParted moves the NTFS partition down behind the shrunk ext4 (a full copy of it)
        start3 = p[2].start + new2 + mib
        sh(
            f"dd if={copy}p3 of={copy} bs=1M count={new3 // mib} seek={start3 // mib} conv=notrunc,fsync status=none"
        )
        start4 = start3 + new3 + mib
        table = (
            f"label: gpt\nlabel-id: {t.id}\nunit: sectors\n\n"
            f"start={p[1].start}, size={p[1].size}, type={p[1].type}, uuid={p[1].uuid}\n"
            f"start={p[2].start}, size={new2}, type={p[2].type}, uuid={p[2].uuid}\n"
            f"start={start3}, size={new3}, type={p[3].type}, uuid={p[3].uuid}\n"
            f"start={start4}, size={p[4].size}, type={p[4].type}, uuid={p[4].uuid}\n"
        )
        subprocess.run(["sfdisk", "-q", "--no-reread", copy], input=table.encode(), check=True)
        lab.rescan(copy)
        sh(f"mkswap -L swap {copy}p4")

    def capture() -> None:
        sh(f"sfdisk -d {copy} | grep -v -e '^last-lba' -e '^device' > {cz}/pt.sf")
        for n, fs in FS.items():
            sh(
                f"{PARTCLONE[fs]} -c -q -s {copy}p{n} -o - -L /dev/null | zstd -q -T0 -3 > {cz}/p{n}.zst"
            )

    def restore() -> None:
        sh(f"sfdisk -q {dst} < {cz}/pt.sf")
        lab.rescan(dst)
        for n in FS:
            sh(f"zstd -q -dc {cz}/p{n}.zst | partclone.restore -q -s - -o {dst}p{n} -L /dev/null")
        sh(f"mkswap -L swap {dst}p4")

    for name, fn in (("shrink", shrink), ("capture", capture), ("restore", restore)):
        res[f"clonezilla_{name}_s"], res[f"clonezilla_{name}_cpu"] = timed(fn)
    return res


def partclone_copy(src: str, dst: str) -> None:
    """Clonezilla's disk-to-disk copy: the table, then each filesystem with partclone -b."""
    sh(f"sfdisk -d {src} | sfdisk -q {dst}")
    lab.rescan(dst)
    for n, fs in FS.items():
        sh(f"{PARTCLONE[fs]} -b -q -s {src}p{n} -o {dst}p{n} -L /dev/null")
    sh(f"mkswap -L swap {dst}p4")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gib", type=float, default=3.0)
    ap.add_argument("--fill", type=float, default=0.35, help="fraction of the ext4 to fill")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results_disk.json"))
    args = ap.parse_args()
    ok, why = lab.can_use_loop()
    if not ok:
        raise SystemExit(f"bench needs loop devices: {why}")
    size_mib = int(args.size_gib * 1024)
    small = int(size_mib * 0.6) * MiB
    tmp = Path(tempfile.mkdtemp(prefix="bootmedia-bench-disk-", dir=args.workdir))
    py = sys.executable
    src = lab.attach(lab.make_file(tmp / "src.img", size_mib * MiB))
    same = lab.attach(lab.make_file(tmp / "same.img", size_mib * MiB))
    dst = lab.attach(lab.make_file(tmp / "small.img", small))
    res: dict[str, float] = {"source_bytes": size_mib * MiB, "target_bytes": small}
    try:
        build_disk(src, size_mib, tmp, fill=args.fill)
        run([py, "-m", "bootmedia", "capture", src, str(tmp / "repo"), "--name", "bench", "-q"])
        apply = [py, "-m", "bootmedia", "apply", str(tmp / "repo"), "bench"]
        res["same_size_s"], res["same_size_cpu"] = timed(
            lambda: run([*apply, same, "--confirm", Path(same).name, "-q"])
        )
        out: list[str] = []
        res["smaller_s"], res["smaller_cpu"] = timed(
            lambda: out.append(run([*apply, dst, "--confirm", Path(dst).name, "-q"]))
        )
        print(out[0])
        sh(f"wipefs -a -q {dst}")
        sh(f"wipefs -a -q {same}")
        clone = [py, "-m", "bootmedia", "clone", src, same, "--confirm", Path(same).name, "-q"]
        res["clone_s"], res["clone_cpu"] = timed(lambda: run(clone))
        sh(f"wipefs -a -q {same}")
        res["partclone_s"], res["partclone_cpu"] = timed(lambda: partclone_copy(src, same))
        copy = lab.attach(lab.make_file(tmp / "copy.img", size_mib * MiB))
        try:
            res["copy_source_s"], res["copy_source_cpu"] = timed(
                lambda: sh(f"dd if={src} of={copy} bs=4M conv=fsync status=none")
            )
            lab.rescan(copy)  # the copy's partitions, for the kernel
            cz = tmp / "cz"
            cz.mkdir()
            res.update(clonezilla_workaround(copy, dst, cz, small))
        finally:
            lab.detach(copy)
    finally:
        for dev in (src, same, dst):
            lab.detach(dev)
        shutil.rmtree(tmp, ignore_errors=True)
    cz_total = (
        res["clonezilla_shrink_s"] + res["clonezilla_capture_s"] + res["clonezilla_restore_s"]
    )
    cz_cpu = (
        res["clonezilla_shrink_cpu"] + res["clonezilla_capture_cpu"] + res["clonezilla_restore_cpu"]
    )
    ratios = {
        "60% restore time / same-size restore time": res["smaller_s"] / res["same_size_s"],
        "60% restore CPU / same-size restore CPU": res["smaller_cpu"]
        / max(res["same_size_cpu"], 1e-9),
        "Clonezilla workaround (shrink+capture+restore) time / bootmedia 60% restore": cz_total
        / res["smaller_s"],
        "Clonezilla workaround CPU / bootmedia 60% restore CPU": cz_cpu
        / max(res["smaller_cpu"], 1e-9),
        "Clonezilla restore step alone / bootmedia 60% restore": res["clonezilla_restore_s"]
        / res["smaller_s"],
        "bootmedia clone time / partclone -b disk copy time": res["clone_s"] / res["partclone_s"],
        "bootmedia clone CPU / partclone -b disk copy CPU": res["clone_cpu"]
        / max(res["partclone_cpu"], 1e-9),
    }
    print()
    for k, v in res.items():
        print(f"{k:34} {v:,.2f}")
    print()
    for k, v in ratios.items():
        print(f"{k:80} {v:.2f}")
    Path(args.out).write_text(
        json.dumps({"results": res, "ratios": ratios, "shrink_report": out[0]}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
