#!/usr/bin/env python3
"""Network benchmarks (issue 11), each ratio from one run on this machine:

    sudo flock /work/locks/bench.lock .venv/bin/python bench/bench_net.py [--size-mib 1024]
        [--only restore,capture,cast] [--receivers 1,4,8,16] [--out FILE]

  restore   bootmedia apply from nginx over loopback (in a namespace)  vs  from a local repository
  cast      bootmedia cast to 1, 4, 8, 16 receivers (udpcast over a bridge between namespaces)
            vs the same number of concurrent unicast restores from nginx
  capture   bootmedia capture onto an ssh:// repository (sshd on loopback)  vs  onto a local one

Wall time and CPU-seconds (all processes, from the children's rusage), and for cast/unicast the
bytes the server sent: multicast sends the image once, unicast N times. All receivers share
this machine's 2 cores and one disk, so their write and verify work adds up here as it would
not on N separate machines; the server's bytes show the network side. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootmedia import lab  # noqa: E402
from tests.net.netns import Lan, Netns  # noqa: E402
from tests.net.servers import start_nginx, start_sshd  # noqa: E402

MiB = 1 << 20
PY = sys.executable
RDV = "239.77.0.1"


def cold() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, BOOTMEDIA_NET_DIR=str(tmp / "mnt"), BOOTMEDIA_LOG_DIR=str(tmp / "log"))


def run_all(
    argvs: list[list[str]], tmp: Path, outs: list[str] | None = None
) -> tuple[float, float]:
    """Run commands at once; wall seconds and CPU-seconds of all of them (their standard
    outputs into outs, if given)."""
    cold()
    c0, t0 = cpu(), time.perf_counter()
    procs = [
        subprocess.Popen(a, cwd=ROOT, env=env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for a in argvs
    ]
    done = [(p, *p.communicate()) for p in procs]
    wall, used = time.perf_counter() - t0, cpu() - c0
    for p, _, err in done:
        if p.returncode:
            raise SystemExit(f"{p.args!r} failed: {err.decode()[-800:]}")
    if outs is not None:
        outs.extend(out.decode() for _, out, _ in done)
    return round(wall, 2), round(used, 2)


def receiver_phases(reports: Path) -> dict[str, object]:
    """The receivers' own accounts (receive --report): per phase, the sum of their CPU-seconds
    and the longest wall time."""
    docs = [json.loads(f.read_text()) for f in sorted(reports.glob("*.json"))]
    cpu_sum: dict[str, float] = {}
    wall_max: dict[str, float] = {}
    for d in docs:
        for name, ph in d["phases"].items():
            cpu_sum[name] = round(cpu_sum.get(name, 0.0) + ph["cpu"], 2)
            wall_max[name] = max(wall_max.get(name, 0.0), ph["wall"])
    # stream-decode and stream-write are parts of stream
    own = ("stream", "fallback", "flush", "verify", "finish")
    total = sum(cpu_sum.get(k, 0.0) for k in (*own, "programs"))
    return {
        "reports": len(docs),
        "cpu_sum": cpu_sum,
        "wall_max": wall_max,
        "cpu_total": round(total, 2),
        "cpu_each": round(total / max(len(docs), 1), 2),
    }


def bm(ns: Netns | None, *args: str) -> list[str]:
    argv = [PY, "-m", "bootmedia", *args]
    return ns.cmd(*argv) if ns else argv


def nginx_bytes(log: Path) -> int:
    total = 0
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[6].isdigit():  # $body_bytes_sent (tests/net/servers.py)
            total += int(parts[6])
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024, help="restore/capture disk")
    ap.add_argument(
        "--cast-mib", type=int, default=256, help="each multicast receiver's disk (>= 256)"
    )
    ap.add_argument("--receivers", default="1,4,8,16")
    ap.add_argument("--only", default="restore,capture,cast", help="which parts to run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results_net.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bm-bench-net-"))
    attached: list[str] = []
    results: dict[str, object] = {"machine": f"{os.cpu_count()} cores"}

    def disk(size_mib: int) -> str:
        dev = lab.attach(lab.make_file(tmp / f"d{len(attached)}.img", size_mib * MiB))
        attached.append(dev)
        return dev

    parts = set(args.only.split(","))
    try:
        if parts & {"restore", "capture"}:
            _restore_and_capture(args, tmp, disk, attached, results)
        if "cast" in parts:
            _cast(args, tmp, disk, attached, results)
    finally:
        for dev in reversed(attached):
            lab.detach(dev)
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


def _restore_and_capture(
    args: argparse.Namespace,
    tmp: Path,
    disk: Callable[[int], str],
    attached: list[str],
    results: dict[str, object],
) -> None:
    # ---- restore: nginx over loopback vs local --------------------------------------
    src = disk(args.size_mib)
    lab.populate_sample_disk(src, "gpt", fill=0.6, seed=3)
    www = tmp / "www"
    run_all([bm(None, "capture", src, str(www / "repo"), "--name", "golden", "-q")], tmp)
    ns = Netns("bench")
    try:
        nginx = start_nginx(ns, tmp / "nginx", www)
        # Each run gets a fresh target (a file written before is faster to overwrite), and
        # each variant runs twice, alternating; the better of its two runs counts.
        runs: dict[str, list[tuple[float, float]]] = {"local": [], "http": []}
        for _ in range(2):
            for kind in ("local", "http"):
                dst = disk(args.size_mib)
                conf = ("--confirm", Path(dst).name, "-q")
                repo = str(www / "repo") if kind == "local" else nginx.url("repo")
                runs[kind].append(
                    run_all(
                        [
                            bm(
                                None if kind == "local" else ns,
                                "apply",
                                repo,
                                "golden",
                                dst,
                                *conf,
                            )
                        ],
                        tmp,
                    )
                )
                lab.detach(dst)
                attached.remove(dst)
        local, http = min(runs["local"]), min(runs["http"])
        results["restore"] = {
            "disk_mib": args.size_mib,
            "local": {"wall": local[0], "cpu": local[1]},
            "nginx_loopback": {"wall": http[0], "cpu": http[1]},
            "ratio_wall": round(http[0] / local[0], 2),
        }
        print("restore", results["restore"], flush=True)

        # ---- capture: ssh vs local ----------------------------------------------------
        sshd = start_sshd(ns, tmp / "sshd")
        remote = tmp / "ssh-repo"
        remote.mkdir()
        c_local = run_all(
            [bm(None, "capture", src, str(tmp / "local-repo"), "--name", "c", "-q")], tmp
        )
        c_ssh = run_all(
            [
                bm(
                    ns,
                    "--credentials",
                    str(sshd.credentials),
                    "capture",
                    src,
                    sshd.url(remote),
                    "--name",
                    "c",
                    "-q",
                )
            ],
            tmp,
        )
        results["capture"] = {
            "disk_mib": args.size_mib,
            "local": {"wall": c_local[0], "cpu": c_local[1]},
            "ssh_loopback": {"wall": c_ssh[0], "cpu": c_ssh[1]},
            "ratio_wall": round(c_ssh[0] / c_local[0], 2),
        }
        print("capture", results["capture"], flush=True)
    finally:
        for mp in (tmp / "mnt").glob("ssh-*"):
            if os.path.ismount(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)
        ns.close()


def _cast(
    args: argparse.Namespace,
    tmp: Path,
    disk: Callable[[int], str],
    attached: list[str],
    results: dict[str, object],
) -> None:
    # ---- multicast vs unicast -----------------------------------------------------------
    csrc = disk(args.cast_mib)
    lab.populate_sample_disk(csrc, "gpt", fill=0.6, seed=4)
    cwww = tmp / "cwww"
    run_all([bm(None, "capture", csrc, str(cwww / "repo"), "--name", "golden", "-q")], tmp)
    curve = []
    for n in (int(x) for x in args.receivers.split(",")):
        net = Lan()
        targets: list[str] = []
        try:
            sender = net.add(1)
            ng = start_nginx(sender, tmp / f"cng{n}", cwww, host="10.77.0.1")
            hosts = [net.add(10 + i) for i in range(n)]
            targets.extend(disk(args.cast_mib) for _ in range(n))
            reports = tmp / f"reports{n}"
            reports.mkdir()
            rx = [
                bm(h, "receive", t, "--confirm", Path(t).name, "--fallback", ng.url("repo"),
                   "--interface", "eth0", "--rdv", RDV, "--report", str(reports), "-q")
                for h, t in zip(hosts, targets, strict=True)
            ]  # fmt: skip
            tx = bm(sender, "cast", str(cwww / "repo"), "golden", "--receivers", str(n),
                    "--wait", "120", "--interface", "eth0", "--rdv", RDV, "-q")  # fmt: skip
            outs: list[str] = []
            m_wall, m_cpu = run_all([*rx, tx], tmp, outs)
            m_bytes = nginx_bytes(ng.access_log)
            # The sender's line: "... (stream 4.1 s, sender CPU 2.3 s)".
            sent = re.search(r"\(stream ([\d.]+) s, sender CPU ([\d.]+) s\)", outs[-1])
            assert sent is not None, outs[-1]
            uni = [
                bm(h, "apply", ng.url("repo"), "golden", t, "--confirm", Path(t).name, "-q")
                for h, t in zip(hosts, targets, strict=True)
            ]
            before = nginx_bytes(ng.access_log)
            u_wall, u_cpu = run_all(uni, tmp)
            u_bytes = nginx_bytes(ng.access_log) - before
            stream = sum(p.stat().st_size for p in (cwww / "repo" / "packs").glob("pack-*"))
            row = {
                "receivers": n,
                "multicast": {"wall": m_wall, "cpu": m_cpu, "fallback_bytes": m_bytes,
                              "stream_bytes": stream,
                          # the wall time this machine's cores need for that CPU at least
                          "cpu_floor": round(m_cpu / (os.cpu_count() or 1), 2),
                          "sender": {"stream_s": float(sent[1]), "cpu": float(sent[2])},
                          "receivers": receiver_phases(reports)},
                "unicast": {"wall": u_wall, "cpu": u_cpu, "server_bytes": u_bytes},
            }  # fmt: skip
            curve.append(row)
            print("cast", row, flush=True)
        finally:
            net.close()
            for t in targets:
                lab.detach(t)
                attached.remove(t)
    base_m = curve[0]["multicast"]["wall"]  # type: ignore[index]
    base_u = curve[0]["unicast"]["wall"]  # type: ignore[index]
    for row in curve:
        row["multicast_growth"] = round(row["multicast"]["wall"] / base_m, 2)  # type: ignore[index]
        row["unicast_growth"] = round(row["unicast"]["wall"] / base_u, 2)  # type: ignore[index]
    results["cast"] = {"disk_mib": args.cast_mib, "curve": curve}


if __name__ == "__main__":
    raise SystemExit(main())
