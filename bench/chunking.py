#!/usr/bin/env python3
"""Measure the dedup block size: what a recapture after a package upgrade adds, per block size.

    sudo .venv/bin/python bench/chunking.py [--image DISK.img] [--keep DISK.img]

Builds the benchmark disk (bench.py's), reads the ext4 root's used blocks, hashes them at each
candidate block size (unused bytes zeroed, blocks without a used byte left out), then applies
bench.py's package upgrade (1% of the files rewritten as new files and renamed) and counts the
blocks the recapture would store, compressed the way format 2 stores them (new blocks together
in frames of about 1 MiB). Prints a table and writes bench/chunking.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import blake3
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import MiB, build_disk, package_upgrade  # noqa: E402
from bootmedia import lab  # noqa: E402
from bootmedia.fs import used_ranges  # noqa: E402

SIZES = [4 << 10, 16 << 10, 32 << 10, 64 << 10, 1 << 20]
FRAME = 1 << 20


def blocks(
    dev: str, ranges: list[tuple[int, int]], bs: int, known: set[bytes] | None = None
) -> tuple[set[bytes], list[bytes]]:
    """The hashes of every block of `bs` holding a used byte (unused bytes zeroed), and the
    contents of those not in `known` (all of them when known is None)."""
    hashes: set[bytes] = set()
    new: list[bytes] = []
    by_block: dict[int, list[tuple[int, int]]] = {}
    for s, n in ranges:
        while n:
            b = s // bs
            take = min(n, (b + 1) * bs - s)
            by_block.setdefault(b, []).append((s - b * bs, take))
            s, n = s + take, n - take
    with open(dev, "rb", buffering=0) as f:
        for b, pieces in by_block.items():
            buf = bytearray(bs)
            for off, n in pieces:
                f.seek(b * bs + off)
                buf[off : off + n] = f.read(n)
            h = blake3.blake3(buf).digest()
            if known is None or (h not in known and h not in hashes):
                new.append(bytes(buf))
            hashes.add(h)
    return hashes, new


class Framer:
    """Streams blocks into ~1 MiB frames and sums their compressed sizes."""

    def __init__(self, level: int) -> None:
        self.cctx = zstandard.ZstdCompressor(level=level)
        self.cur: list[bytes] = []
        self.n = self.total = 0
        self.cpu = 0.0

    def add(self, d: bytes) -> None:
        self.cur.append(d)
        self.n += len(d)
        if self.n >= FRAME:
            self.flush()

    def flush(self) -> int:
        if self.cur:
            t = time.process_time()
            self.total += len(self.cctx.compress(b"".join(self.cur)))
            self.cpu += time.process_time() - t
        self.cur, self.n = [], 0
        return self.total


def framed_size(data: list[bytes], level: int) -> int:
    f = Framer(level)
    for d in data:
        f.add(d)
    return f.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", help="a benchmark disk built before (copied, not changed)")
    ap.add_argument("--keep", help="save the freshly built disk here for later runs")
    ap.add_argument("--size-gib", type=float, default=3.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bootmedia-chunking-"))
    img = tmp / "src.img"
    if args.image:
        shutil.copyfile(args.image, img)
    else:
        lab.make_file(img, int(args.size_gib * 1024) * MiB)
    dev = lab.attach(img)
    results: dict[str, object] = {}
    try:
        if not args.image:
            build_disk(dev, int(args.size_gib * 1024), tmp)
            if args.keep:
                lab.detach(dev)
                shutil.copyfile(img, args.keep)
                dev = lab.attach(img)
        lab.rescan(dev)
        part = f"{dev}p2"
        before_ranges = used_ranges(part, "ext4", tmp)
        before: dict[int, set[bytes]] = {}
        full = {}
        cctx = zstandard.ZstdCompressor(level=3)
        v1 = 0
        for bs in SIZES:
            hashes, data = blocks(part, before_ranges, bs)
            before[bs] = hashes
            if bs == 1 << 20:
                v1 = sum(len(cctx.compress(d)) for d in data)
            elif bs in (16 << 10, 64 << 10):
                for level in (2, 3):
                    fr = Framer(level)
                    for d in data:
                        fr.add(d)
                    full[f"{bs >> 10}K-l{level}"] = (fr.flush(), fr.cpu)
            del data
        (tmp / "mnt").mkdir(exist_ok=True)
        files, nbytes = package_upgrade(part, tmp / "mnt")
        after_ranges = used_ranges(part, "ext4", tmp)
        rows = []
        for bs in SIZES:
            _, new = blocks(part, after_ranges, bs, before[bs])
            stored = (
                sum(len(cctx.compress(d)) for d in new) if bs == 1 << 20 else framed_size(new, 3)
            )
            rows.append(
                {
                    "block": bs,
                    "blocks": len(before[bs]),
                    "new_blocks": len(new),
                    "new_raw": sum(len(d) for d in new),
                    "new_stored_l3": stored,
                }
            )
        results = {
            "upgrade_files": files,
            "upgrade_bytes": nbytes,
            "used_bytes": sum(n for _, n in before_ranges),
            "full_ext4_v1_chunks_l3": v1,
            "full_ext4_framed": full,
            "rows": rows,
        }
    finally:
        lab.detach(dev)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"upgrade: {results['upgrade_files']} files, {results['upgrade_bytes'] / MiB:.1f} MiB")
    print(f"ext4 used {results['used_bytes'] / MiB:.0f} MiB; v1 image {v1 / MiB:.1f} MiB")
    for k, (size, cpu) in full.items():
        print(f"  full ext4 framed {k}: {size / MiB:.1f} MiB, {cpu:.1f} CPU-s")
    for r in rows:
        print(
            f"block {r['block'] >> 10:5} KiB: {r['new_blocks']:7} new blocks, "
            f"{r['new_raw'] / MiB:7.1f} MiB raw, {r['new_stored_l3'] / MiB:6.1f} MiB stored "
            f"= {100 * r['new_stored_l3'] / v1:5.1f}% of the v1 ext4 image"
        )
    Path(ROOT / "bench" / "chunking.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
