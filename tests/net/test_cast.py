"""Multicast with udpcast between namespaces joined by a bridge: 1 sender, 8 receivers each
writing its own loop disk, all verified; lossy links whose receivers fetch what they missed from
the fallback (a real nginx); a receiver that joins an acknowledged session after its start
(everything from the fallback), and one that joins a --late-join (async) session after its start
(the rest of the stream, and only the missed chunks from the fallback).

Built for a busy 2-core CI machine: the sender starts only once every receiver's udp-receiver
runs (not after a fixed sleep), every wait is bounded and says what it waited for, and nothing
outlives the test: the `rig` fixture kills the test's processes at teardown, each of them dies
with the test process (PR_SET_PDEATHSIG) if that is killed, and each loop disk is detached as
soon as it is made while the test holds it open (the kernel's autoclear), so the kernel frees it
at the last close, when the test ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.lab import SamplePart
from tests import sample
from tests.net.conftest import WHY_NOT, bootmedia_cmd, cli_env
from tests.net.netns import Lan, Netns, die_with_parent
from tests.net.servers import Nginx, start_nginx

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
RDV = "239.77.0.1"
LAYOUT = (SamplePart(1, "ext4", 40), SamplePart(2, "ext4", 0))


READY_SECONDS = 240  # for every receiver's udp-receiver to run, on a loaded machine


class Rig:
    """The processes and loop disks of one test, so that none outlives it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.held: list[tuple[str, int]] = []
        self.count = 0

    def disk(self, size: int) -> str:
        dev = lab.attach(lab.make_file(self.tmp / f"cast-disk{self.count}.img", size))
        self.count += 1
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
        self.held.append((dev, fd))
        # Detached while we hold it open: the kernel sets autoclear and frees the device at the
        # last close. We never touch it by name after our fd is closed.
        lab.detach(dev)
        return dev

    def start(self, argv: list[str], tmp: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, env=env(tmp), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=die_with_parent,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        proc = self.start(argv, tmp)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{' '.join(argv[4:7])} still running after {timeout} s: {err[-2000:]}")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=30)
        for dev, fd in self.held:
            parts = sorted(str(p) for p in Path("/dev").glob(Path(dev).name + "p*"))
            if parts:  # a read-back's mount left by a failed assertion
                lab.run(["umount", "-l", *parts], check=False)
            os.close(fd)


@pytest.fixture
def lan() -> Iterator[Lan]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    net = Lan()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def rig(lan: Lan, tmp_path: Path) -> Iterator[Rig]:
    """Torn down before `lan` (it depends on it): processes first, then the disks."""
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


env = cli_env
bm = bootmedia_cmd


def wait_for(what: str, ready: Callable[[], bool], seconds: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not after {seconds} s"
        time.sleep(0.1)


@dataclass
class Rx:
    number: int
    disk: str
    proc: subprocess.Popen[str]
    ns: Netns

    def listening(self) -> bool:
        """Its udp-receiver runs (and so asks the rendezvous for the session)."""
        assert self.proc.poll() is None, f"receiver {self.number} ended: {self.proc.stderr.read()}"  # type: ignore[union-attr]
        pids = subprocess.run(
            ["ip", "netns", "pids", self.ns.name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "udp-receiver":
                    return True
        return False


def all_listening(rx: list[Rx]) -> None:
    for r in rx:
        wait_for(f"receiver {r.number}'s udp-receiver", r.listening)


@pytest.fixture
def setup(lan: Lan, rig: Rig, tmp_path: Path):
    """The golden disk in a repository that the sender reads and nginx serves as fallback."""
    src = rig.disk(96 * MiB)
    sample.build(src, "gpt", layout=LAYOUT)
    want = sample.sums(src, LAYOUT)
    www = tmp_path / "www"
    proc = rig.run(
        [sys.executable, "-m", "bootmedia", "capture", src, str(www / "repo"), "--name", "golden", "-q"],
        tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sender = lan.add(1)
    nginx = start_nginx(sender, tmp_path / "nginx", www, host="10.77.0.1")
    results = tmp_path / "results"
    results.mkdir()
    return sender, nginx, www / "repo", results, want


def start_receivers(
    lan: Lan, rig: Rig, tmp: Path, nginx: Nginx, results: Path, numbers: list[int], *extra: str
) -> list[Rx]:
    out = []
    for n in numbers:
        ns = lan.add(n)
        disk = rig.disk(96 * MiB)
        argv = bm(
            ns, "receive", disk, "--confirm", Path(disk).name, "--fallback", nginx.url("repo"),
            "--interface", "eth0", "--rdv", RDV, "--report", str(results), "-q", *extra,
        )  # fmt: skip
        out.append(Rx(n, disk, rig.start(argv, tmp), ns))
    return out


def cast(
    rig: Rig, sender: Netns, repo: Path, results: Path, tmp: Path, receivers: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    return rig.run(
        bm(
            sender, "cast", str(repo), "golden", "--receivers", str(receivers), "--wait", "60",
            "--interface", "eth0", "--rdv", RDV, "--results", str(results),
            "--results-wait", "240", "-q", *extra,
        ),
        tmp, timeout=600,
    )  # fmt: skip


def finish(rx: list[Rx], seconds: float = 300) -> dict[int, tuple[str, str, str]]:
    """Every receiver's end, within `seconds` in all."""
    deadline = time.monotonic() + seconds
    done = {}
    for r in rx:
        try:
            out, err = r.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"receiver {r.number} still running after {seconds} s")
        assert r.proc.returncode == 0, f"receiver {r.number}: {err}"
        done[r.number] = (r.disk, out, err)
    return done


def check_disks(done: dict[int, tuple[str, str, str]], want: dict) -> None:
    for n, (disk, _, _) in done.items():
        lab.run(["partx", "-u", disk], check=False)
        assert sample.sums(disk, LAYOUT) == want, f"receiver {n}: files differ"


def reports(results: Path) -> dict[str, dict]:
    return {d["address"]: d for d in (json.loads(p.read_text()) for p in results.glob("*.json"))}


def test_one_sender_eight_receivers_all_verified(lan: Lan, setup, rig: Rig, tmp_path: Path) -> None:
    sender, nginx, repo, results, want = setup
    rx = start_receivers(lan, rig, tmp_path, nginx, results, list(range(11, 19)))
    all_listening(rx)
    sent = cast(rig, sender, repo, results, tmp_path, 8)
    done = finish(rx)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    check_disks(done, want)
    table = sent.stdout
    for n in range(11, 19):
        assert f"10.77.0.{n}" in table
    assert table.count("verified") >= 8, table
    got = reports(results)
    assert sorted(got) == [f"10.77.0.{n}" for n in range(11, 19)]
    assert all(d["ok"] and d["from_fallback"] == 0 for d in got.values()), got
    assert not any("stopped early" in n for d in got.values() for n in d["notes"]), got
    # Where the time went, as each receiver and the sender account for it (bench_net adds up).
    for d in got.values():
        assert {"stream", "stream-decode", "stream-write", "programs", "verify"} <= set(d["phases"])
        assert d["phases"]["stream"]["wall"] > 0 and d["phases"]["verify"]["cpu"] > 0, d
        assert d["phases"]["stream-decode"]["cpu"] <= d["phases"]["stream"]["cpu"], d
    line = re.search(r"\(stream ([\d.]+) s, sender CPU ([\d.]+) s\)", table)
    assert line and float(line[1]) > 0 and float(line[2]) > 0, table
    # Each chunk went once on the wire: nginx served no chunk (no fallback was needed).
    assert "/packs/" not in nginx.access_log.read_text()


def test_lossy_links_fetch_missing_chunks_from_the_fallback(
    lan: Lan, setup, rig: Rig, tmp_path: Path
) -> None:
    sender, nginx, repo, results, want = setup
    # Only receiver 13, whose link is cut below, gives up on the stream after 3 s; the others
    # keep the default (30 s), so a loaded machine's pauses and receiver 12's lost packets never
    # end their stream early (a suite run on a busy machine lost receiver 12 that way, before
    # any data, when all four had 3 s).
    rx = [
        *start_receivers(lan, rig, tmp_path, nginx, results, [11, 12], "--start-timeout", "240"),
        *start_receivers(
            lan, rig, tmp_path, nginx, results, [13], "--receive-timeout", "3",
            "--start-timeout", "240",
        ),
        *start_receivers(lan, rig, tmp_path, nginx, results, [14], "--start-timeout", "240"),
    ]  # fmt: skip
    lan.lossy(12, 5)  # udpcast retransmits what it loses: slower, still complete
    all_listening(rx)
    sending = rig.start(
        bm(sender, "cast", str(repo), "golden", "--receivers", "4", "--wait", "60",
           "--interface", "eth0", "--rdv", RDV, "--results", str(results),
           "--results-wait", "240", "--max-bitrate", "40m", "-q"),
        tmp_path,
    )  # fmt: skip
    # Once the transfer runs (receiver 13 marked its disk incomplete: the header arrived),
    # receiver 13 loses everything: udpcast drops it, its stream stops, and it must fetch the
    # rest from the fallback.
    disk13 = next(r.disk for r in rx if r.number == 13)
    wait_for(
        "receiver 13's header (its disk marked incomplete)",
        lambda: sample.read(disk13, 0, len(INCOMPLETE_MARKER)) == INCOMPLETE_MARKER,
    )
    time.sleep(1)
    lan.lossy(13, 100)
    try:
        out, err = sending.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("the sender still runs after 600 s")
    sent = subprocess.CompletedProcess(sending.args, sending.returncode, out, err)
    done = finish(rx)
    check_disks(done, want)
    got = reports(results)
    assert got["10.77.0.13"]["ok"] and got["10.77.0.13"]["from_fallback"] > 0, got
    assert any("stopped early" in n for n in got["10.77.0.13"]["notes"]), got
    # The others all verified (a receiver starved of CPU on this busy host may be dropped by
    # udp-sender too; then it also completes from the fallback, which is the point).
    assert all(d["ok"] for d in got.values()) and len(got) == 4, got
    assert "/packs/" in nginx.access_log.read_text()
    assert "verified" in sent.stdout, sent.stdout + sent.stderr


def test_a_receiver_that_joins_late_restores_from_the_fallback(
    lan: Lan, setup, rig: Rig, tmp_path: Path
) -> None:
    sender, nginx, repo, results, want = setup
    rx = start_receivers(lan, rig, tmp_path, nginx, results, [11])
    all_listening(rx)
    send = rig.start(
        bm(sender, "cast", str(repo), "golden", "--receivers", "1", "--wait", "5",
           "--interface", "eth0", "--rdv", RDV, "--results", str(results), "--results-wait", "120", "-q"),
        tmp_path,
    )  # fmt: skip
    # Late: the session has started (receiver 11 has the header and marked its disk).
    disk11 = rx[0].disk
    wait_for(
        "receiver 11's header (its disk marked incomplete)",
        lambda: sample.read(disk11, 0, len(INCOMPLETE_MARKER)) == INCOMPLETE_MARKER,
    )
    late = start_receivers(
        lan, rig, tmp_path, nginx, results, [19], "--image", "golden", "--start-timeout", "5"
    )
    done = finish(rx + late)
    try:
        out, err = send.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the sender still runs after 300 s")
    check_disks(done, want)
    got = reports(results)
    assert got["10.77.0.11"]["joined"] and got["10.77.0.11"]["ok"], got
    assert "joined late" in done[19][1], done[19]
    assert "10.77.0.11" in out, out + err


def test_a_late_joiner_takes_the_rest_of_the_stream_and_fetches_only_what_it_missed(
    lan: Lan, setup, rig: Rig, tmp_path: Path
) -> None:
    """cast --late-join (udpcast's async streaming mode): receiver 19 starts once receiver 11
    is well into the stream; it picks the stream up at the next udpcast slice, writes what
    comes, and fetches from nginx only the chunks sent before it joined (and any lost)."""
    sender, nginx, repo, results, want = setup
    rx = start_receivers(lan, rig, tmp_path, nginx, results, [11], "--image", "golden")
    all_listening(rx)
    # 8 Mbit/s: the stream lasts long enough (many seconds) for a receiver to start inside it.
    send = rig.start(
        bm(sender, "cast", str(repo), "golden", "--late-join", "--wait", "2", "--receivers", "2",
           "--max-bitrate", "8m", "--interface", "eth0", "--rdv", RDV, "--results", str(results),
           "--results-wait", "240"),
        tmp_path,
    )  # fmt: skip
    disk11 = rx[0].disk
    wait_for(
        "receiver 11's header (its disk marked incomplete)",
        lambda: sample.read(disk11, 0, len(INCOMPLETE_MARKER)) == INCOMPLETE_MARKER,
    )
    time.sleep(3)  # well into the stream
    late = start_receivers(lan, rig, tmp_path, nginx, results, [19], "--image", "golden")
    done = finish(rx + late)
    try:
        out, err = send.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the sender still runs after 300 s")
    assert send.returncode == 0, out + err
    check_disks(done, want)
    got = reports(results)
    first, joiner = got["10.77.0.11"], got["10.77.0.19"]
    assert first["ok"] and not first["midstream"], got
    assert joiner["ok"] and joiner["midstream"], got
    total = joiner["from_stream"] + joiner["from_fallback"]
    # It took the rest of the stream, and fetched from the fallback only what it missed.
    assert joiner["from_stream"] > 0 and 0 < joiner["from_fallback"] < total, joiner
    assert "note: joined the session after its start" in done[19][1], done[19]
    # nginx's side: receiver 19 asked for fewer pack bytes than the image's packs hold.
    lines = [ln.split() for ln in nginx.access_log.read_text().splitlines()]
    fetched = sum(int(ln[6]) for ln in lines if ln[7] == "10.77.0.19" and "/packs/" in ln[3])
    packs = sum(f.stat().st_size for f in (repo / "packs").glob("pack-*"))
    assert 0 < fetched < packs, (fetched, packs)
    print(
        f"late joiner: {joiner['from_stream']} chunks from the stream, {joiner['from_fallback']}"
        f" of {total} from the fallback; {fetched} of {packs} pack bytes fetched from nginx"
    )
    # The sender saw both results (async receivers never answer it: only their reports).
    assert "10.77.0.11" in out and "10.77.0.19" in out and out.count("verified") >= 2, out


def test_an_unattended_receive_job_joins_the_session(
    lan: Lan, setup, rig: Rig, tmp_path: Path, monkeypatch
) -> None:
    """action = "receive": the job's repository is the fallback; the result says verified."""
    from bootmedia import unattended as u
    from bootmedia.disks import find_disk
    from bootmedia.net import mount
    from bootmedia.progress import Reporter

    sender, nginx, repo, _, want = setup
    monkeypatch.setattr(mount, "MOUNT_ROOT", tmp_path / "mnt")
    here = lan.add(11)
    disk = rig.disk(96 * MiB)
    spec = u.JobSpec.from_dict(
        {"action": "receive", "image": "golden", "target": "internal", "repo": nginx.url("repo"),
         "rdv": RDV, "interface": "eth0"}, "test",
    )  # fmt: skip
    send = rig.start(
        bm(sender, "cast", str(repo), "golden", "--receivers", "1", "--wait", "120",
           "--interface", "eth0", "--rdv", RDV, "-q"),
        tmp_path,
    )  # fmt: skip
    with here.entered():
        fallback = u.find_repo(spec, None, u.repo_has_image)
        job = u.ResolvedJob(spec, find_disk(disk), fallback, None)
        assert "bootmedia receive" in " ".join(job.command())
        assert any("multicast session" in line for line in job.summary())
        result = u.run_restore(job, Reporter())
    assert (result.status, result.verified) == ("success", True), result.message
    try:
        _, err = send.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the sender still runs after 300 s")
    assert send.returncode == 0, err
    lab.run(["partx", "-u", disk], check=False)
    assert sample.sums(disk, LAYOUT) == want
