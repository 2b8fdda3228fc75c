#!/usr/bin/env python3
"""Benchmark bootmedia against what a technician would otherwise run, on the same disk, in one run.

    sudo .venv/bin/python bench/bench.py [--size-gib 3] [--keep]

Builds a realistic disk on a loop device (ESP + ext4 full of real system files + NTFS + swap,
stale random data left in the free space), then times, each from a cold page cache:

  capture   bootmedia capture          vs  partclone.<fs> -c | zstd -T0 -3   (Clonezilla)
                                       vs  dd | zstd -T0 -3
  restore   bootmedia apply (+verify)  vs  zstd -dc | partclone.restore      (no verify)
                                       vs  zstd -dc | dd
and reports time ratios, image sizes, bootmedia's peak RSS, and capture throughput as a fraction
of `zstd -T0 -3` alone on the same used bytes. Not a test: tests check correctness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootmedia import lab  # noqa: E402
from bootmedia.fs import PARTCLONE  # noqa: E402

MiB = 1 << 20
LAYOUT = "label: gpt\nsize=256MiB, type=U\nsize={root}MiB, type=L\nsize={ntfs}MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nsize=256MiB, type=S\n"
FS = {1: "vfat", 2: "ext4", 3: "ntfs"}


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stdout=subprocess.DEVNULL)


def cold() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    cold()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timed_rss(argv: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one command."""
    cold()
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return elapsed, usage.ru_maxrss * 1024


def build_disk(dev: str, size_mib: int, tmp: Path, fill: float = 0.6) -> None:
    print("building the disk: stale random data first ...", flush=True)
    sh(
        f"openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 </dev/zero 2>/dev/null | "
        f"head -c {size_mib * MiB} > {dev} || true"
    )
    ntfs = max(256, size_mib // 6)
    root = size_mib - 256 - ntfs - 256 - 4
    subprocess.run(
        ["sfdisk", "-q", dev], input=LAYOUT.format(root=root, ntfs=ntfs).encode(), check=True
    )
    lab.rescan(dev)
    mnt = tmp / "mnt"
    mnt.mkdir()
    # ESP: FAT32 with a bootloader-sized tree of real files
    sh(f"mkfs.vfat -F 32 -n ESP {dev}p1 >/dev/null")
    sh(f"mcopy -s -i {dev}p1 /usr/lib/python3.11/email /usr/lib/python3.11/json ::/")
    # root: ext4 full of real system files
    sh(f"mkfs.ext4 -q -F -L root {dev}p2")
    sh(f"mount {dev}p2 {mnt}")
    budget = int(root * MiB * fill)
    for src in (
        "/usr/lib/x86_64-linux-gnu",
        "/usr/share",
        "/usr/lib/python3.11",
        "/usr/bin",
        "/usr/lib/gcc",
        "/usr/libexec",
    ):
        used = shutil.disk_usage(mnt).used
        if used > budget:
            break
        subprocess.run(
            ["cp", "-a", src, str(mnt / src.strip("/").replace("/", "_"))],
            check=False,
            stderr=subprocess.DEVNULL,
        )
    sh(f"umount {mnt}")
    # data: NTFS with documents-like content
    sh(f"mkntfs -Q -F -L data {dev}p3 >/dev/null")
    sh(f"mount -t ntfs-3g {dev}p3 {mnt}")
    sh(f"cp -a /usr/share/doc {mnt}/doc; cp -a /usr/share/perl {mnt}/perl 2>/dev/null || true")
    sh(f"umount {mnt}")
    sh(f"mkswap -L swap {dev}p4 >/dev/null")


def package_upgrade(part: str, mnt: Path, every: int = 100) -> tuple[int, int]:
    """What a package upgrade does to an ext4 root: every `every`-th regular file (1%) gets a
    new version, written as a new file beside it and renamed over it (dpkg's way). The new
    version is the old content behind a short header, so it is as compressible as before but
    new at every byte. Returns (files, bytes) rewritten."""
    sh(f"mount {part} {mnt}")
    files = nbytes = 0
    try:
        paths = sorted(
            p
            for p in mnt.rglob("*")
            if p.is_file() and not p.is_symlink() and p.name != "lost+found"
        )
        for p in paths[::every]:
            data = b"upgraded package version 2\n" + p.read_bytes()
            new = p.with_name(p.name + ".dpkg-new")
            new.write_bytes(data)
            os.rename(new, p)
            files += 1
            nbytes += len(data)
    finally:
        sh(f"umount {mnt}")
    return files, nbytes


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gib", type=float, default=3.0)
    ap.add_argument("--workdir", default=None, help="scratch space (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = ap.parse_args()
    ok, why = lab.can_use_loop()
    if not ok:
        raise SystemExit(f"bench needs loop devices: {why}")
    size_mib = int(args.size_gib * 1024)
    tmp = Path(tempfile.mkdtemp(prefix="bootmedia-bench-", dir=args.workdir))
    py = sys.executable
    src = lab.attach(lab.make_file(tmp / "src.img", size_mib * MiB))
    dst = lab.attach(lab.make_file(tmp / "dst.img", size_mib * MiB))
    res: dict[str, float] = {}
    try:
        build_disk(src, size_mib, tmp)
        cz = tmp / "clonezilla"
        cz.mkdir()
        used = 0
        for n, fs in FS.items():
            out = subprocess.run(
                [
                    PARTCLONE[fs],
                    "-D",
                    "-q",
                    "-s",
                    f"{src}p{n}",
                    "-o",
                    str(tmp / f"d{n}"),
                    "-L",
                    "/dev/null",
                ],
                check=True,
                capture_output=True,
            )
            del out
            for line in (tmp / f"d{n}").read_text().splitlines():
                p = line.split()
                if len(p) == 3 and p[2] == "+":
                    used += int(p[1], 16)
        res["used_bytes"] = used
        print(f"disk: {size_mib} MiB, {used / MiB:.0f} MiB in use", flush=True)

        def cz_capture() -> None:
            sh(f"sfdisk -d {src} > {cz}/pt.sf")
            for n, fs in FS.items():
                sh(
                    f"{PARTCLONE[fs]} -c -q -s {src}p{n} -o - -L /dev/null | zstd -q -T0 -3 > {cz}/p{n}.zst"
                )

        def cz_restore() -> None:
            sh(f"sfdisk -q {dst} < {cz}/pt.sf")
            lab.rescan(dst)
            for n in FS:
                sh(
                    f"zstd -q -dc {cz}/p{n}.zst | partclone.restore -q -s - -o {dst}p{n} -L /dev/null"
                )
            sh(f"mkswap -L swap {dst}p4")

        def dd_capture() -> None:
            sh(f"dd if={src} bs=4M status=none | zstd -q -T0 -3 > {tmp}/dd.zst")

        def dd_restore() -> None:
            sh(f"zstd -q -dc {tmp}/dd.zst | dd of={dst} bs=4M status=none conv=fsync")

        res["clonezilla_capture_s"] = timed(cz_capture)
        res["clonezilla_image_bytes"] = sum(f.stat().st_size for f in cz.glob("*.zst"))
        res["bootmedia_capture_s"], res["bootmedia_capture_rss"] = timed_rss(
            [py, "-m", "bootmedia", "capture", src, str(tmp / "repo"), "--name", "bench", "-q"]
        )
        res["bootmedia_image_bytes"] = sum(
            f.stat().st_size for f in (tmp / "repo" / "packs").iterdir()
        )
        res["dd_capture_s"] = timed(dd_capture)
        res["dd_image_bytes"] = (tmp / "dd.zst").stat().st_size

        res["clonezilla_restore_s"] = timed(lambda: (cz_restore(), os.sync()))
        sh(f"wipefs -a -q {dst}")
        res["bootmedia_apply_s"], res["bootmedia_apply_rss"] = timed_rss(
            [
                py,
                "-m",
                "bootmedia",
                "apply",
                str(tmp / "repo"),
                "bench",
                dst,
                "--confirm",
                Path(dst).name,
                "-q",
            ]
        )
        res["dd_restore_s"] = timed(dd_restore)

        # zstd alone on the same used bytes: the ceiling for a capture
        sh(f"{PARTCLONE['ext4']} -c -q -s {src}p2 -o - -L /dev/null > {tmp}/raw.pc")
        raw = (tmp / "raw.pc").stat().st_size
        t = timed(lambda: sh(f"zstd -q -T0 -3 -c {tmp}/raw.pc > /dev/null"))
        res["zstd_alone_Bps"] = raw / t
        res["bootmedia_capture_Bps"] = used / res["bootmedia_capture_s"]
    finally:
        subprocess.run(["umount", "-l", str(tmp / "mnt")], capture_output=True, check=False)
        lab.detach(src)
        lab.detach(dst)
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = {
        "capture speedup vs Clonezilla": res["clonezilla_capture_s"] / res["bootmedia_capture_s"],
        "capture speedup vs dd|zstd": res["dd_capture_s"] / res["bootmedia_capture_s"],
        "apply+verify speedup vs Clonezilla restore (no verify)": res["clonezilla_restore_s"]
        / res["bootmedia_apply_s"],
        "apply+verify speedup vs zstd|dd": res["dd_restore_s"] / res["bootmedia_apply_s"],
        "image size vs Clonezilla": res["bootmedia_image_bytes"] / res["clonezilla_image_bytes"],
        "capture throughput / zstd -T0 -3 alone": res["bootmedia_capture_Bps"]
        / res["zstd_alone_Bps"],
    }
    print()
    for k, v in res.items():
        print(f"{k:32} {v:,.2f}")
    print()
    for k, v in ratios.items():
        print(f"{k:58} {v:6.2f}")
    print(
        f"{'peak RSS capture / apply (MiB)':58} {res['bootmedia_capture_rss'] / MiB:6.0f} / "
        f"{res['bootmedia_apply_rss'] / MiB:.0f}"
    )
    Path(args.out).write_text(
        json.dumps(
            {"measured": res, "ratios": ratios, "nproc": os.cpu_count(), "size_mib": size_mib},
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
