"""bootmedia cast: one image, one multicast stream, through udpcast's udp-sender.

udp-sender does the multicast (rendezvous, retransmissions, slow receivers); we feed it the
stream (bootmedia.cast.stream) on its standard input and read its log to show each receiver's
state. Receivers that report into a results directory (`receive --report DIR`) show their
final result here too.

Two kinds of session:
- acknowledged (the default): receivers connect, udp-sender starts when N joined (or after
  --wait), retransmits what any of them lost, and drops one that stops answering. It takes no
  receiver once the transfer runs (udpcast ignores a connection request then).
- late join (`--late-join`): udp-sender's async streaming mode (--async --streaming). Receivers
  never answer; the HELLO that tells them the session is repeated inside every slice, so a
  receiver started at any time picks the stream up at the next slice. Nothing is retransmitted:
  forward error correction mends some loss, the receiver's fallback repository the rest (and
  the part sent before it joined). The sender cannot count receivers: it starts --wait seconds
  after it starts, and --receivers is how many results (--results DIR) it waits for.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from bootmedia.apply import check_image
from bootmedia.cast.stream import END_MAGIC, image_header
from bootmedia.errors import BootmediaError, ImageError, ToolError, UsageError
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import Manifest
from bootmedia.repo.packs import FLAG_ZSTD, chunk_hash, pack_record_header
from bootmedia.repo.store import Location, Repository
from bootmedia.run import require_tools, stream, which
from bootmedia.text import plural

log = logging.getLogger("bootmedia.cast")

DEFAULT_RDV = "239.255.77.77"  # administratively scoped: stays on the site's network
DEFAULT_PORTBASE = 9000
# A late-join session is not paced by acknowledgements: udpcast sends at this rate unless told
# (it counts headers and FEC too). Lower it for a slow network or slow receivers.
LATE_JOIN_BITRATE = "500m"
LATE_JOIN_FEC = "8x8"  # 8 stripes per slice, 8 redundant blocks each (udp-sender --fec)


def udpcast_args(interface: str | None, rdv: str, portbase: int) -> list[str]:
    argv = ["--nokbd", "--mcast-rdv-address", rdv, "--portbase", str(portbase)]
    if interface:
        argv += ["--interface", interface]
    return argv


@dataclass(frozen=True)
class CastPlan:
    repo: Path
    repo_label: str  # what the technician named (the URL, not the mount point)
    image: Manifest
    chunks: int
    stored_bytes: int
    receivers: int
    wait: int
    interface: str | None
    rdv: str
    portbase: int
    results: Path | None
    max_bitrate: str | None = None
    late_join: bool = False

    def summary(self) -> list[str]:
        m = self.image
        lines = [
            f"Image '{m.name}' ({m.created}) from {self.repo_label}",
            f"Stream: {self.chunks} chunks, {human_bytes(self.stored_bytes)} (each chunk once)",
            (
                f"Start after {self.wait} s; receivers may join at any time and fetch what "
                f"they missed from their fallback (late join: no retransmission, FEC "
                f"{LATE_JOIN_FEC})"
                if self.late_join
                else f"Start when {plural(self.receivers, 'receiver')} joined, or after {self.wait} s "
                "with at least one"
            ),
            f"Multicast rendezvous {self.rdv}, ports {self.portbase}-{self.portbase + 1}"
            + (f", interface {self.interface}" if self.interface else "")
            + (f", at most {self.bitrate}bit/s" if self.bitrate else ""),
        ]
        if self.results:
            lines.append(
                f"Receivers' results collected in {self.results}"
                + (f" (waiting for {self.receivers})" if self.late_join else "")
            )
        return lines

    @property
    def bitrate(self) -> str | None:
        return self.max_bitrate or (LATE_JOIN_BITRATE if self.late_join else None)

    def command(self) -> list[str]:
        argv = ["bootmedia", "cast", self.repo_label, self.image.name]
        argv += ["--receivers", str(self.receivers), "--wait", str(self.wait)]
        if self.interface:
            argv += ["--interface", self.interface]
        if self.rdv != DEFAULT_RDV:
            argv += ["--rdv", self.rdv]
        if self.portbase != DEFAULT_PORTBASE:
            argv += ["--portbase", str(self.portbase)]
        if self.results:
            argv += ["--results", str(self.results)]
        if self.max_bitrate:
            argv += ["--max-bitrate", self.max_bitrate]
        if self.late_join:
            argv += ["--late-join"]
        return argv

    def receive_command(self) -> str:
        """What to run on each receiver (shown to the technician)."""
        argv = ["bootmedia", "receive", "DISK", "--fallback", self.repo_label]
        if self.rdv != DEFAULT_RDV:
            argv += ["--rdv", self.rdv]
        if self.portbase != DEFAULT_PORTBASE:
            argv += ["--portbase", str(self.portbase)]
        if self.results:
            argv += ["--report", str(self.results)]
        return shlex.join(argv)

    def to_dict(self) -> dict[str, object]:
        return {
            "repo": self.repo_label,
            "image": self.image.name,
            "chunks": self.chunks,
            "stored_bytes": self.stored_bytes,
            "receivers": self.receivers,
            "wait": self.wait,
            "interface": self.interface,
            "rdv": self.rdv,
            "portbase": self.portbase,
            "results": str(self.results) if self.results else None,
            "max_bitrate": self.max_bitrate,
            "late_join": self.late_join,
        }


class _Payloads:
    """What the stream carries for each chunk: format 1's stored record as it is; a format-2
    block (stored inside a frame with others) cut from its decompressed frame, checked against
    its name and compressed alone.

    The last few decompressed frames are kept (FRAMES of them, about 1 MiB each): a frame's
    blocks come one after another in disk order, and decompressing the whole frame again for
    each of its ~64 blocks took 10 of the sender's 13 CPU-seconds for a 256 MiB disk."""

    FRAMES = 8

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.dctx = zstandard.ZstdDecompressor()
        self.cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
        self.frames: dict[tuple[str, int], bytes] = {}

    def __call__(self, loc: Location, digest: bytes) -> bytes:
        if not loc.is_frame:
            return self.repo.read_payload(loc, digest)
        key = (loc.pack, loc.offset)
        data = self.frames.get(key)
        if data is None:
            _, data = self.repo.read_frame(loc, self.dctx)
            if len(self.frames) >= self.FRAMES:
                del self.frames[next(iter(self.frames))]  # the oldest
            self.frames[key] = data
        block = data[loc.in_frame : loc.in_frame + loc.raw_len]
        if len(block) != loc.raw_len or chunk_hash(block) != digest:
            raise ImageError(f"{loc.pack}: block checksum mismatch at byte {loc.offset}")
        return self.cctx.compress(block)


def _chunk_order(repo: Repository, m: Manifest) -> Iterator[tuple[bytes, Location]]:
    """Each distinct chunk once, in the order the disk needs it (boot area first)."""
    seen: set[bytes] = set()
    for area in m.areas:
        if not area.map:
            continue
        for e in repo.extents(m, area.name):
            if e.is_zero or e.hash in seen:
                continue
            seen.add(e.hash)
            loc = repo.locate(e.hash)
            assert loc is not None  # check_image said so
            yield e.hash, loc


def plan_cast(
    repo: str | Path,
    image: str,
    *,
    receivers: int = 1,
    wait: int = 60,
    interface: str | None = None,
    rdv: str = DEFAULT_RDV,
    portbase: int = DEFAULT_PORTBASE,
    results: str | Path | None = None,
    repo_label: str | None = None,
    max_bitrate: str | None = None,
    late_join: bool = False,
) -> CastPlan:
    if max_bitrate is not None and not re.fullmatch(r"[1-9]\d{0,5}[kmg]?", max_bitrate):
        raise UsageError(f"--max-bitrate {max_bitrate}: give e.g. 500m or 1g")
    if not 1 <= receivers <= 1000:
        raise UsageError("--receivers must be between 1 and 1000")
    if not 1 <= wait <= 86400:
        raise UsageError("--wait must be between 1 s and a day")
    if not re.fullmatch(r"2(2[4-9]|3\d)(\.\d{1,3}){3}", rdv):
        raise UsageError(f"--rdv {rdv}: not a multicast address (224.0.0.0-239.255.255.255)")
    if not 1024 <= portbase <= 65534 or portbase % 2:
        raise UsageError("--portbase must be an even port between 1024 and 65534")
    if interface is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,15}", interface):
        raise UsageError(f"--interface {interface!r}: not an interface name")
    if results is not None and not Path(results).is_dir():
        raise UsageError(f"--results {results}: not a directory")
    path = Path(repo)
    with Repository.open(path) as r:
        m = r.image(image)
        check_image(r, m, tuple(a for a in m.areas if a.map))
        chunks, stored = 0, 0
        for _, loc in _chunk_order(r, m):
            chunks += 1
            stored += loc.share
    return CastPlan(
        path,
        repo_label or str(repo),
        m,
        chunks,
        stored,
        receivers,
        wait,
        interface,
        rdv,
        portbase,
        Path(results) if results else None,
        max_bitrate,
        late_join,
    )


@dataclass
class ReceiverState:
    number: int
    address: str
    state: str = "connected"  # connected, receiving, stream sent, dropped, verified, FAILED
    detail: str = ""


@dataclass
class CastResult:
    image: str
    sent_bytes: int
    seconds: float
    receivers: list[ReceiverState] = field(default_factory=list)
    sender_log: str = ""
    stream_seconds: float = 0.0  # udp-sender's "Starting transfer" to its end
    cpu_seconds: float = 0.0  # this process (every thread) and udp-sender

    @property
    def ok(self) -> bool:
        return bool(self.receivers) and all(
            r.state in ("stream sent", "verified") for r in self.receivers
        )


_PROGRESS = re.compile(r"^bytes=")  # udp-sender's counters, many a second
_NEW = re.compile(r"New connection from (\S+)\s+\(#(\d+)\)")
_GONE = re.compile(r"Disconnecting #(\d+) \((\S+)\)")
_DROP = re.compile(r"[Dd]ropping client #(\d+)")


def cast_image(
    plan: CastPlan,
    reporter: Reporter | None = None,
    on_change: Callable[[list[ReceiverState]], None] | None = None,
    results_wait: float = 0,
) -> CastResult:
    """Send the image; returns when udp-sender is done (and results_wait seconds more for the
    receivers' reports, when a results directory was given)."""
    reporter = reporter or Reporter()
    require_tools("udp-sender")
    started, cpu0 = time.monotonic(), _cpu()
    transfer: list[float] = []  # when udp-sender said "Starting transfer"
    receivers: dict[int, ReceiverState] = {}
    lock = threading.Lock()
    log_lines: list[str] = []

    def changed() -> None:
        if on_change:
            with lock:
                snapshot = [
                    ReceiverState(**vars(r))
                    for r in sorted(receivers.values(), key=lambda r: r.number)
                ]
            on_change(snapshot)

    argv = [
        which("udp-sender") or "udp-sender",
        *udpcast_args(plan.interface, plan.rdv, plan.portbase),
    ]
    if plan.late_join:
        # Async: receivers never answer, so --min-receivers and --max-wait count nothing; the
        # HELLO goes out every second before the start (--autostart: after `wait` of them) and
        # once inside every slice after it (--streaming), which is what lets a receiver join.
        argv += [
            "--async", "--streaming", "--fec", LATE_JOIN_FEC,
            "--rexmit-hello-interval", "1000", "--autostart", str(plan.wait),
        ]  # fmt: skip
    else:
        # --rexmit-hello-interval: udp-sender checks --min-receivers only when its wait for a
        # message times out, 2 s by default, so every session started up to 2 s after its
        # last receiver joined; with a HELLO every 0.2 s it checks every 0.2 s (and a receiver
        # started before the sender hears of the session within 0.2 s).
        argv += [
            "--min-receivers", str(plan.receivers),
            "--max-wait", str(plan.wait),
            "--retries-until-drop", "30",
            "--rexmit-hello-interval", "200",
        ]  # fmt: skip
    if plan.bitrate:
        argv += ["--max-bitrate", plan.bitrate]

    def watch(line: str) -> None:
        log_lines.append(line)
        with lock:
            if m := _NEW.search(line):
                receivers[int(m[2])] = ReceiverState(int(m[2]), m[1])
            elif line.startswith("Starting transfer"):
                transfer.append(time.monotonic())
                for r in receivers.values():
                    r.state = "receiving"
            elif m := _GONE.search(line):
                r = receivers.setdefault(int(m[1]), ReceiverState(int(m[1]), m[2]))
                if r.state != "dropped":
                    r.state = "stream sent"
            elif m := _DROP.search(line):
                r = receivers.setdefault(int(m[1]), ReceiverState(int(m[1]), "?"))
                r.state, r.detail = "dropped", "too many losses: must use its fallback"
            else:
                return
        changed()

    # udp-sender streamed through bootmedia.run.stream(): we feed its stdin; any failure
    # (exit status other than 0, killed) is a ToolError with the command and its stderr.
    proc = stream(argv, stdin=True, on_line=watch, ignore=_PROGRESS)
    sent = 0
    cut = False
    reporter.add_total(plan.stored_bytes)
    try:
        with Repository.open(plan.repo) as repo:
            repo.hold(plan.image.name, "cast")  # a delete of the image refuses while we send
            m = repo.image(plan.image.name)
            header = image_header(repo, m, plan.chunks, plan.stored_bytes)
            waiting = f"{plan.wait} s" if plan.late_join else plural(plan.receivers, "receiver")
            with reporter.step(f"Waiting for {waiting}, then sending"):
                proc.stdin.write(header.encode())
                count = 0
                payloads = _Payloads(repo)
                for digest, loc in _chunk_order(repo, m):
                    reporter.check_cancel()
                    payload = payloads(loc, digest)
                    proc.stdin.write(
                        pack_record_header(
                            digest,
                            loc.raw_len,
                            len(payload),
                            FLAG_ZSTD if loc.is_frame else loc.flags,
                        )
                    )
                    proc.stdin.write(payload)
                    count += 1
                    sent += len(payload)
                    reporter.advance(len(payload))
                proc.stdin.write(END_MAGIC + count.to_bytes(4, "little"))
    except BrokenPipeError:
        cut = True  # udp-sender ended early: finish() raises with its exit status and stderr
    except BaseException:
        proc.kill()
        raise
    # No timeout: a session lasts as long as its slowest receiver (udp-sender drops the ones
    # that stop answering, --retries-until-drop).
    proc.finish(timeout=None)
    streamed = round(time.monotonic() - transfer[0], 3) if transfer else 0.0
    cpu = round(_cpu() - cpu0, 3)
    if cut:  # it ended with status 0 and did not read the whole stream: not a success
        raise ToolError(argv, 0, proc.stderr() + "\nit stopped reading before the stream's end")
    if not receivers and not plan.late_join:  # async receivers never answer: only results tell
        raise BootmediaError(f"no receiver joined within {plan.wait} s")
    result = CastResult(
        m.name,
        sent,
        round(time.monotonic() - started, 3),
        [],
        "\n".join(log_lines[-50:]),
        streamed,
        cpu,
    )
    if plan.results:
        deadline = time.monotonic() + results_wait
        while True:
            _collect(plan.results, m.name, receivers)
            changed()
            done = [r for r in receivers.values() if r.state in ("verified", "FAILED")]
            expected = plan.receivers if plan.late_join else len(receivers)
            if len(done) >= max(expected, len(receivers)) or time.monotonic() >= deadline:
                break
            time.sleep(1)
    result.receivers = sorted(receivers.values(), key=lambda r: r.number)
    return result


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its children that ended."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + r.ru_utime + r.ru_stime


def _collect(results: Path, image: str, receivers: dict[int, ReceiverState]) -> None:
    """Match the receivers' reports (by address) to the session's receivers."""
    by_addr = {r.address: r for r in receivers.values()}
    for f in sorted(results.glob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("image") not in (image, ""):
            continue
        r = by_addr.get(str(doc.get("address", "")))
        if r is None:
            n = -1 - len([x for x in receivers if x < 0])
            r = receivers[n] = ReceiverState(n, str(doc.get("address", "?")), "connected")
            by_addr[r.address] = r
        r.state = "verified" if doc.get("ok") else "FAILED"
        r.detail = str(doc.get("detail", ""))[:200]
