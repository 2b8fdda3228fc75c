#!/usr/bin/env python3
"""The README's benchmark table, from bench/results.json (written by bench/bench.py).

.venv/bin/python bench/table.py            print it
.venv/bin/python bench/table.py --readme   replace the block between the markers in README.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench:begin (bench/table.py writes this from bench/results.json) -->"
END = "<!-- bench:end -->"


def _s(summary: dict[str, dict[str, float]], key: str) -> str:
    v = summary.get(key)
    if not v:
        return "-"
    return (
        f"{v['wall_median']:.1f} s ({v['wall_min']:.1f}–{v['wall_max']:.1f}), "
        f"{v['cpu_s_per_gb']:.1f} CPU-s/GB"
    )


def from_partial(part: dict) -> dict:  # type: ignore[type-arg]
    """bench.py's checkpoint (what a run measured before it stopped) summarised like a full
    result: the rounds that ran, no recapture or sparse-disk rows unless they ran."""
    import statistics

    res = dict(part["res"])
    used = res["used_bytes"] / 1e9
    summary = {}
    for key, ms in part["runs"].items():
        walls = sorted(m["wall"] for m in ms)
        cpus = sorted(m["cpu"] for m in ms)
        summary[key] = {
            "wall_median": statistics.median(walls),
            "wall_min": walls[0],
            "wall_max": walls[-1],
            "cpu_median": statistics.median(cpus),
            "cpu_s_per_gb": statistics.median(cpus) / used,
            "rss_max": max(m["rss"] for m in ms),
            "rounds": len(ms),
        }
    res["summary"] = summary
    res["sizes"] = part["sizes"]
    return res


def render_partial(res: dict) -> str:  # type: ignore[type-arg]
    s = res["summary"]
    sizes = res["sizes"]
    w = {k: v["wall_median"] for k, v in s.items()}
    c = {k: v["cpu_median"] for k, v in s.items()}
    rounds = min(v["rounds"] for k, v in s.items() if k.startswith(("capture/", "restore/")))
    lines = [
        f"Measured on this project's {res['nproc']}-core shared VM (load average above 10 while "
        f"it ran), a {res['size_mib'] / 1024:.0f} GiB disk with {res['used_bytes'] / 1e9:.2f} GB "
        f"in use; wall time median (range) over {rounds} interleaved round(s), CPU-seconds per "
        "GB of used data. The run did not finish the recapture and 20 GiB rows in time.",
        "",
        "| | bootmedia | Clonezilla (`partclone \\| zstd -T0 -3`) | dd + zstd | fsarchiver `-j2 -Z3` (ext4 only) |",
        "|---|---|---|---|---|",
        f"| Capture | {_s(s, 'capture/bootmedia')} | {_s(s, 'capture/clonezilla')} | "
        f"{_s(s, 'capture/dd')} | {_s(s, 'capture/fsarchiver')} |",
        f"| Restore | {_s(s, 'restore/bootmedia')}, **with** read-back verify | "
        f"{_s(s, 'restore/clonezilla')}, no verify | {_s(s, 'restore/dd')}, no verify | "
        f"{_s(s, 'restore/fsarchiver')} |",
        f"| Image size | {sizes.get('bootmedia', 0) / 1e6:.0f} MB | {sizes.get('clonezilla', 0) / 1e6:.0f} MB | "
        f"{sizes.get('dd', 0) / 1e6:.0f} MB | {sizes.get('fsarchiver', 0) / 1e6:.0f} MB |",
        "",
        f"Ratios in this run: capture wall {w['capture/bootmedia'] / w['capture/clonezilla']:.2f}× "
        f"Clonezilla's (target 0.33×), CPU {c['capture/bootmedia'] / c['capture/clonezilla']:.2f}× "
        f"(target 0.5×); image {sizes['bootmedia'] / sizes['clonezilla']:.3f}× (target 1.05×); "
        f"apply+verify wall {w['restore/bootmedia'] / w['restore/clonezilla']:.2f}× Clonezilla's "
        f"restore (target 0.4×), CPU {c['restore/bootmedia'] / c['restore/clonezilla']:.2f}× "
        f"(target 0.75×). Peak RSS: capture {s['capture/bootmedia']['rss_max'] / 2**20:.0f} MiB, "
        f"apply {s['restore/bootmedia']['rss_max'] / 2**20:.0f} MiB.",
    ]
    return "\n".join(lines)


def render(res: dict) -> str:  # type: ignore[type-arg]
    s = res["summary"]
    r = res["ratios"]
    sizes = res["sizes"]
    up = res["upgrade"]
    mb = 1e6
    rounds = s["capture/bootmedia"]["rounds"]
    lines = [
        f"Measured on this project's {res['nproc']}-core shared VM, a {res['size_mib'] / 1024:.0f} GiB "
        f"disk with {res['used_bytes'] / 1e9:.2f} GB in use; wall time median (range) over "
        f"{rounds} interleaved rounds, CPU-seconds per GB of used data:",
        "",
        "| | bootmedia | Clonezilla (`partclone \\| zstd -T0 -3`) | dd + zstd | fsarchiver `-j2 -Z3` (ext4 only) |",
        "|---|---|---|---|---|",
        f"| Capture | {_s(s, 'capture/bootmedia')} | {_s(s, 'capture/clonezilla')} | "
        f"{_s(s, 'capture/dd')} | {_s(s, 'capture/fsarchiver')} |",
        f"| Restore | {_s(s, 'restore/bootmedia')}, **with** read-back verify | "
        f"{_s(s, 'restore/clonezilla')}, no verify | {_s(s, 'restore/dd')}, no verify | "
        f"{_s(s, 'restore/fsarchiver')} |",
        f"| Image size | {sizes['bootmedia'] / mb:.0f} MB | {sizes['clonezilla'] / mb:.0f} MB | "
        f"{sizes['dd'] / mb:.0f} MB | {sizes['fsarchiver'] / mb:.0f} MB |",
        f"| Recapture after a package upgrade | {_s(s, 'recapture/bootmedia')}, adds "
        f"{up['added_bytes'] / mb:.1f} MB | {_s(s, 'recapture/clonezilla')}, a full image again | | |",
        f"| 20 GiB sparse disk, capture | {_s(s, 'sparse/bootmedia')}, peak RSS "
        f"{s['sparse/bootmedia']['rss_max'] / 2**20:.0f} MiB | {_s(s, 'sparse/clonezilla')} | | |",
        "",
        "| target (issue 9) | measured | |",
        "|---|---|---|",
        f"| capture ≤ 0.33× Clonezilla's wall | {r['capture wall vs Clonezilla']:.2f}× | "
        f"{'met' if r['capture wall vs Clonezilla'] <= 0.33 else 'not met'} |",
        f"| capture ≤ 0.5× Clonezilla's CPU | {r['capture CPU vs Clonezilla']:.2f}× | "
        f"{'met' if r['capture CPU vs Clonezilla'] <= 0.5 else 'not met'} |",
        f"| image ≤ 1.05× Clonezilla's | {r['image size vs Clonezilla']:.3f}× | "
        f"{'met' if r['image size vs Clonezilla'] <= 1.05 else 'not met'} |",
        f"| apply+verify ≤ 0.4× Clonezilla's restore wall | "
        f"{r['apply+verify wall vs Clonezilla restore']:.2f}× | "
        f"{'met' if r['apply+verify wall vs Clonezilla restore'] <= 0.4 else 'not met'} |",
        f"| apply+verify ≤ 0.75× Clonezilla's restore CPU | "
        f"{r['apply+verify CPU vs Clonezilla restore']:.2f}× | "
        f"{'met' if r['apply+verify CPU vs Clonezilla restore'] <= 0.75 else 'not met'} |",
        f"| recapture adds ≤ 3% of a full image | {100 * r['recapture adds, of a full image']:.1f}% "
        f"({up['files']} files, {up['bytes'] / mb:.1f} MB rewritten) | "
        f"{'met' if r['recapture adds, of a full image'] <= 0.03 else 'not met'} |",
        f"| recapture ≤ 0.3× the first capture's time | {r['recapture wall vs first capture']:.2f}× | "
        f"{'met' if r['recapture wall vs first capture'] <= 0.3 else 'not met'} |",
        f"| peak RSS ≤ 256 MiB | capture {s['capture/bootmedia']['rss_max'] / 2**20:.0f} MiB, "
        f"apply {s['restore/bootmedia']['rss_max'] / 2**20:.0f} MiB, 20 GiB disk "
        f"{s['sparse/bootmedia']['rss_max'] / 2**20:.0f} MiB | "
        f"{'met' if max(s[k]['rss_max'] for k in ('capture/bootmedia', 'restore/bootmedia', 'sparse/bootmedia')) <= 256 * 2**20 else 'not met'} |",
        "",
        scaling(res),
    ]
    return "\n".join(lines)


def scaling(res: dict) -> str:  # type: ignore[type-arg]
    p = res["projection"]
    s = res["summary"]
    one = s["capture/bootmedia-1thread"]["wall_median"]
    alln = s["capture/bootmedia"]["wall_median"]
    serial_part = (
        "The serial part is the ordered writer, a few calls per frame (append the record the "
        "worker built to its pack with one writev, note each new block for the pack's .idx, "
        "write the packed map entries, count the frame into the image's statistics in memory: "
        "no SQLite statement), plus the GIL-held Python work per block in the workers (zero "
        "check, BLAKE3 call, map entry; 64 blocks per frame) and the one index lookup per frame, "
        "which the index cache's lock serialises; at 8-16 cores those, not compression, are the "
        "limit."
    )
    if p["serial_fraction"] >= 0.9:
        return (
            f"Scaling: capture takes {p['cpu_s_per_gb']:.1f} CPU-s per GB of used data. The "
            f"one-core run ({one:.1f} s) was not slower than the all-core median ({alln:.1f} s) "
            "because the shared machine's load fell during the run, so this run measures no "
            "serial share and gives no projection to 8 or 16 cores. " + serial_part
        )
    if p["serial_fraction"] <= 0.0 and one >= alln * res["nproc"]:
        cores = 8
        return (
            f"Scaling: capture takes {p['cpu_s_per_gb']:.1f} CPU-s per GB of used data. The "
            f"one-core run ({one:.1f} s, one sample) took {one / alln:.2f}x the all-core median "
            f"({alln:.1f} s), more than the {res['nproc']} cores explain: the shared machine's "
            "load rose during it, so this run measures no serial share and gives no Amdahl "
            "projection. From CPU-seconds alone, 1 GB would take "
            f"{p['cpu_s_per_gb'] / cores:.2f} s of {cores} cores and "
            f"{p['cpu_s_per_gb'] / 16:.2f} s of 16 if nothing were serial. " + serial_part
        )
    here = p[f"capture_s_{res['nproc']}_cores"]
    return (
        f"Scaling: capture takes {p['cpu_s_per_gb']:.1f} CPU-s per GB of used data. From the same "
        f"capture pinned to one core against all {res['nproc']}, its serial share is "
        f"{100 * p['serial_fraction']:.0f}% (Amdahl), which projects "
        f"{p['capture_s_8_cores']:.1f} s on 8 cores and {p['capture_s_16_cores']:.1f} s on 16 "
        f"(against {here:.1f} s here), as long as the disk keeps up. That is an upper bound "
        "on the serial share: on a VM whose cores are all busy, the kernel's reading of the "
        "disk competes with the capture for them, and a capture on one core loses more to it "
        "than the serial code explains. " + serial_part
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results.json"))
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    data = json.loads(Path(args.results).read_text())
    text = render(data) if "ratios" in data else render_partial(from_partial(data))
    if not args.readme:
        print(text)
        return 0
    readme = ROOT / "README.md"
    body = readme.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body:
        body = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, body, flags=re.S)
    else:
        raise SystemExit(f"README.md has no {BEGIN} marker")
    readme.write_text(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
