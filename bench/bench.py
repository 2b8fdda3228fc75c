#!/usr/bin/env python3
"""Benchmark bootmedia against what a technician would otherwise run, on the same disk, in one run.

    sudo flock /work/locks/bench.lock .venv/bin/python bench/bench.py [--rounds 3] [--image DISK]

Builds a realistic disk on a loop device (ESP + ext4 full of real system files + NTFS + swap,
stale random data left in the free space), then, each from a cold page cache and in
interleaved rounds (so a shared machine's load falls on every tool alike), measures wall time,
CPU-seconds (user + system of the whole process tree) and image size of:

  capture   bootmedia capture          vs  partclone.<fs> -c | zstd -T0 -3   (Clonezilla)
                                       vs  dd | zstd -T0 -3
                                       vs  fsarchiver savefs -j2 -Z3 (the ext4 partition only)
  restore   bootmedia apply (+verify)  vs  zstd -dc | partclone.restore      (no verify)
                                       vs  zstd -dc | dd
                                       vs  fsarchiver restfs (the ext4 partition only)

then the package upgrade (1% of the ext4 files rewritten as new files + rename) and a timed
recapture into the same repository (once per round, each from the state that the first capture
left), and a 20 GiB sparse disk (capture only). Each round also
times bench/read_used.py: reading only the used data with O_DIRECT, the floor under any capture
(and under a recapture that reads every used block). bootmedia's peak
RSS comes from wait4(). Writes bench/results.json; bench/table.py renders the README table.
Not a test: tests check correctness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
    # umount of a FUSE filesystem returns before ntfs-3g has written everything and exited:
    # wait for it, then check the NTFS (a half-written one fails ntfsresize's check later).
    # ([n]: the pattern must not match the shell running this loop)
    sh(f"while pgrep -f '[n]tfs-3g {dev}p3' >/dev/null; do sleep 0.2; done")
    sh(f"ntfsresize --info --force --no-action {dev}p3 >/dev/null")
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


def run_measured(cmd: list[str] | str, cwd: Path = ROOT) -> dict[str, float]:
    """Wall, CPU-seconds (the whole tree) and peak RSS of one command, from a cold cache."""
    cold()
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else cmd
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {cmd}")
    # bash waits for its pipeline, so its own rusage holds its children's CPU; maxrss is the
    # largest single process in the tree
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024}


PARTIAL: dict[str, object] = {}


def checkpoint(path: str, **data: object) -> None:
    """Everything measured so far, so a failure late in a long run loses nothing."""
    PARTIAL.update(data)
    Path(path + ".partial").write_text(json.dumps(PARTIAL, indent=1) + "\n")


def stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"median": statistics.median(v), "min": v[0], "max": v[-1]}


def used_bytes(src: str, tmp: Path) -> int:
    used = 0
    for n, fs in FS.items():
        subprocess.run(
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
        for line in (tmp / f"d{n}").read_text().splitlines():
            p = line.split()
            if len(p) == 3 and p[2] == "+":
                used += int(p[1], 16)
    return used


def sparse_disk(dev: str, tmp: Path) -> None:
    """A 20 GiB disk that is mostly empty: one ext4 partition holding a few hundred MB."""
    subprocess.run(["sfdisk", "-q", dev], input=b"label: gpt\ntype=L\n", check=True)
    lab.rescan(dev)
    sh(f"mkfs.ext4 -q -F -L big {dev}p1")
    mnt = tmp / "mnt"
    mnt.mkdir(exist_ok=True)
    sh(f"mount {dev}p1 {mnt}")
    sh(f"cp -a /usr/lib/python3.11 {mnt}/py; cp -a /usr/share/doc {mnt}/doc")
    sh(f"umount {mnt}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gib", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image", help="a benchmark disk built before (copied, not changed)")
    ap.add_argument("--sparse-gib", type=float, default=20.0)
    ap.add_argument("--workdir", default=None, help="scratch space (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = ap.parse_args()
    ok, why = lab.can_use_loop()
    if not ok:
        raise SystemExit(f"bench needs loop devices: {why}")
    size_mib = int(args.size_gib * 1024)
    tmp = Path(tempfile.mkdtemp(prefix="bootmedia-bench-", dir=args.workdir))
    # bootmedia's index cache for this run only, so the recapture rounds can start alike
    cache = tmp / "cache"
    os.environ["BOOTMEDIA_CACHE_DIR"] = str(cache)
    py = sys.executable
    img = tmp / "src.img"
    if args.image:
        shutil.copyfile(args.image, img)
        size_mib = img.stat().st_size // MiB
    else:
        lab.make_file(img, size_mib * MiB)
    src = lab.attach(img)
    # The restore target's file written whole once, before any tool: otherwise the first
    # restore of the run also pays for allocating the loop file's blocks, and the tools that
    # come after it do not (measured: 9.8 s for bootmedia's first restore, 5.4 s the next).
    sh(f"dd if=/dev/zero of={tmp / 'dst.img'} bs=1M count={size_mib} status=none conv=fsync")
    dst = lab.attach(tmp / "dst.img")
    runs: dict[str, list[dict[str, float]]] = {}
    sizes: dict[str, int] = {}
    res: dict[str, object] = {"nproc": os.cpu_count(), "size_mib": size_mib}
    cz, repo, fsa = tmp / "clonezilla", tmp / "repo", tmp / "fsa.fsa"
    try:
        if not args.image:
            build_disk(src, size_mib, tmp)
        lab.rescan(src)
        used = used_bytes(src, tmp)
        res["used_bytes"] = used
        print(f"disk: {size_mib} MiB, {used / MiB:.0f} MiB in use", flush=True)
        bm = [py, "-m", "bootmedia"]
        capture = {
            "bootmedia": lambda: run_measured(
                [*bm, "capture", src, str(repo), "--name", "bench", "-q"]
            ),
            "clonezilla": lambda: run_measured(
                f"mkdir -p {cz} && sfdisk -d {src} > {cz}/pt.sf && "
                + " && ".join(
                    f"{PARTCLONE[fs]} -c -q -s {src}p{n} -o - -L /dev/null | zstd -q -T0 -3 > {cz}/p{n}.zst"
                    for n, fs in FS.items()
                )
            ),
            "dd": lambda: run_measured(
                f"dd if={src} bs=4M status=none | zstd -q -T0 -3 > {tmp}/dd.zst"
            ),
            "fsarchiver": lambda: run_measured(
                f"fsarchiver -o -j2 -Z3 savefs {fsa} {src}p2 >/dev/null"
            ),
        }
        restore = {
            "bootmedia": lambda: run_measured(
                [*bm, "apply", str(repo), "bench", dst, "--confirm", Path(dst).name, "-q"]
            ),
            "clonezilla": lambda: run_measured(
                f"sfdisk -q {dst} < {cz}/pt.sf && partx -u {dst} && "
                + " && ".join(
                    f"zstd -q -dc {cz}/p{n}.zst | partclone.restore -q -s - -o {dst}p{n} -L /dev/null"
                    for n in FS
                )
                + f" && mkswap -L swap {dst}p4 >/dev/null && sync"
            ),
            "dd": lambda: run_measured(
                f"zstd -q -dc {tmp}/dd.zst | dd of={dst} bs=4M status=none conv=fsync"
            ),
            "fsarchiver": lambda: run_measured(
                f"sfdisk -q {dst} < {cz}/pt.sf && partx -u {dst}; partx -a {dst} 2>/dev/null; "
                f"fsarchiver -j2 restfs {fsa} id=0,dest={dst}p2 >/dev/null && sync"
            ),
        }
        order = list(capture)
        for r in range(args.rounds):
            rot = order[r % len(order) :] + order[: r % len(order)]
            for tool in rot:  # fresh destinations every round
                shutil.rmtree(repo, ignore_errors=True)
                shutil.rmtree(cz, ignore_errors=True)
                for f in (fsa, tmp / "dd.zst"):
                    f.unlink(missing_ok=True)
                m = capture[tool]()
                runs.setdefault(f"capture/{tool}", []).append(m)
                checkpoint(args.out, runs=runs, sizes=sizes, res=res)
                print(
                    f"round {r + 1} capture {tool}: {m['wall']:.1f} s, {m['cpu']:.1f} CPU-s",
                    flush=True,
                )
                if tool == "bootmedia":
                    sizes["bootmedia"] = sum(
                        f.stat().st_size for f in (repo / "packs").glob("pack-*.bmp")
                    )
                elif tool == "clonezilla":
                    sizes["clonezilla"] = sum(f.stat().st_size for f in cz.glob("*.zst"))
                elif tool == "dd":
                    sizes["dd"] = (tmp / "dd.zst").stat().st_size
                else:
                    sizes["fsarchiver"] = fsa.stat().st_size
            # the floor under any capture: only reading what the filesystems use
            m = run_measured(
                [py, str(ROOT / "bench" / "read_used.py")]
                + [f"{src}p{n}:{tmp / f'd{n}'}" for n in FS]
            )
            runs.setdefault("floor/read-used", []).append(m)
            print(f"round {r + 1} read-used floor: {m['wall']:.1f} s, {m['cpu']:.1f} CPU-s")
            # every tool's image exists again for the restores of this round
            for tool in order:
                if tool == "bootmedia" and not (repo / "images" / "bench").exists():
                    capture[tool]()
            for tool in rot:
                if tool == "clonezilla" and not (cz / "pt.sf").exists():
                    capture[tool]()
                if tool == "dd" and not (tmp / "dd.zst").exists():
                    capture[tool]()
                if tool == "fsarchiver" and not fsa.exists():
                    capture[tool]()
            for tool in rot:
                sh(f"wipefs -a -q {dst}")
                m = restore[tool]()
                runs.setdefault(f"restore/{tool}", []).append(m)
                checkpoint(args.out, runs=runs, sizes=sizes, res=res)
                print(
                    f"round {r + 1} restore {tool}: {m['wall']:.1f} s, {m['cpu']:.1f} CPU-s",
                    flush=True,
                )
        # one core (taskset) vs all: the serial share of capture, for the scaling projection
        shutil.rmtree(repo, ignore_errors=True)
        runs["capture/bootmedia-1thread"] = [
            run_measured(
                ["taskset", "-c", "0", *bm, "capture", src, str(repo), "--name", "bench", "-q"]
            )
        ]
        # the package upgrade, then a recapture into the same repository
        before = sum(f.stat().st_size for f in (repo / "packs").glob("pack-*.bmp"))
        (tmp / "mnt").mkdir(exist_ok=True)
        files, nbytes = package_upgrade(f"{src}p2", tmp / "mnt")
        # Each round from the same state: the repository and its index cache as the first
        # capture left them (copied aside now, copied back before each recapture).
        shutil.copytree(repo, tmp / "repo-base", symlinks=True)
        shutil.copytree(cache, tmp / "cache-base")
        added = 0
        for r in range(args.rounds):
            if r:
                shutil.rmtree(repo)
                shutil.rmtree(cache)
                shutil.copytree(tmp / "repo-base", repo, symlinks=True)
                shutil.copytree(tmp / "cache-base", cache)
            m = run_measured([*bm, "capture", src, str(repo), "--name", "upgraded", "-q"])
            added = sum(f.stat().st_size for f in (repo / "packs").glob("pack-*.bmp")) - before
            runs.setdefault("recapture/bootmedia", []).append(m)
            print(f"round {r + 1} recapture: {m['wall']:.1f} s, {m['cpu']:.1f} CPU-s", flush=True)
        res["upgrade"] = {
            "files": files,
            "bytes": nbytes,
            "added_bytes": added,
            "full_bytes": before,
        }
        print(
            f"recapture: {m['wall']:.1f} s, added {added / MiB:.1f} MiB of {before / MiB:.1f}",
            flush=True,
        )
        m = capture["clonezilla"]()
        runs["recapture/clonezilla"] = [m]
        checkpoint(args.out, runs=runs, sizes=sizes, res=res)
        # a 20 GiB sparse disk: reading only what is used, memory not growing with the disk
        lab.detach(dst)
        (tmp / "dst.img").unlink()
        big = lab.attach(lab.make_file(tmp / "big.img", int(args.sparse_gib * 1024) * MiB))
        try:
            sparse_disk(big, tmp)
            shutil.rmtree(tmp / "bigrepo", ignore_errors=True)
            runs["sparse/bootmedia"] = [
                run_measured([*bm, "capture", big, str(tmp / "bigrepo"), "--name", "big", "-q"])
            ]
            runs["sparse/clonezilla"] = [
                run_measured(
                    f"{PARTCLONE['ext4']} -c -q -s {big}p1 -o - -L /dev/null | zstd -q -T0 -3 > {tmp}/big.zst"
                )
            ]
        finally:
            lab.detach(big)
        dst = ""
    finally:
        subprocess.run(["umount", "-l", str(tmp / "mnt")], capture_output=True, check=False)
        lab.detach(src)
        if dst:
            lab.detach(dst)
        shutil.rmtree(tmp, ignore_errors=True)

    gb = used / 1e9
    summary: dict[str, dict[str, float]] = {}
    for key, ms in runs.items():
        summary[key] = {
            **{f"wall_{k}": v for k, v in stats([m["wall"] for m in ms]).items()},
            **{f"cpu_{k}": v for k, v in stats([m["cpu"] for m in ms]).items()},
            "cpu_s_per_gb": statistics.median(m["cpu"] for m in ms) / gb,
            "rss_max": max(m["rss"] for m in ms),
            "rounds": len(ms),
        }
    w = {k: v["wall_median"] for k, v in summary.items()}
    c = {k: v["cpu_median"] for k, v in summary.items()}
    up = res["upgrade"]
    assert isinstance(up, dict)
    ratios = {
        "capture wall vs Clonezilla": w["capture/bootmedia"] / w["capture/clonezilla"],
        "capture CPU vs Clonezilla": c["capture/bootmedia"] / c["capture/clonezilla"],
        "image size vs Clonezilla": sizes["bootmedia"] / sizes["clonezilla"],
        "apply+verify wall vs Clonezilla restore": w["restore/bootmedia"] / w["restore/clonezilla"],
        "apply+verify CPU vs Clonezilla restore": c["restore/bootmedia"] / c["restore/clonezilla"],
        "recapture adds, of a full image": up["added_bytes"] / up["full_bytes"],
        "recapture wall vs first capture": w["recapture/bootmedia"] / w["capture/bootmedia"],
        "reading the used data vs first capture": w["floor/read-used"] / w["capture/bootmedia"],
        "recapture wall vs reading the used data": w["recapture/bootmedia"] / w["floor/read-used"],
        "capture wall vs dd|zstd": w["capture/bootmedia"] / w["capture/dd"],
        "sparse 20 GiB capture wall vs Clonezilla": w["sparse/bootmedia"] / w["sparse/clonezilla"],
    }
    # Amdahl from 1 thread vs all: serial fraction s with T(n) = T1 * (s + (1 - s) / n)
    n = os.cpu_count() or 1
    t1, tn = w["capture/bootmedia-1thread"], w["capture/bootmedia"]
    serial = max(0.0, min(1.0, (tn / t1 - 1 / n) / (1 - 1 / n))) if n > 1 else 1.0
    res["projection"] = {
        "serial_fraction": serial,
        "cpu_s_per_gb": summary["capture/bootmedia"]["cpu_s_per_gb"],
        **{f"capture_s_{k}_cores": t1 * (serial + (1 - serial) / k) for k in (n, 8, 16)},
    }
    res |= {"runs": runs, "summary": summary, "sizes": sizes, "ratios": ratios}
    print()
    for k, v in ratios.items():
        print(f"{k:45} {v:6.3f}")
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
