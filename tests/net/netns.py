"""Network namespaces for the network tests, and real servers started inside them.

Every server and client of tests/net runs in a namespace created here: nothing is sent to any
address outside it. `Netns.entered()` moves the test's own thread into the namespace (setns), so
threads and processes the engine starts from there (HTTP workers, sshfs, mount) are in it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the test process dies (the setting survives
    exec, and `ip netns exec` execs its command in place)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def sweep_stale() -> list[str]:
    """Delete the namespaces a killed test run left: named bmt-<pid>-..., that pid gone, and
    nothing running in them (their processes died with that run). Returns their names."""
    gone = []
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name.split("-")[1] if name.startswith("bmt-") and name.count("-") >= 2 else ""
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        if sh("ip", "netns", "pids", name, check=False).stdout.split():
            continue
        sh("ip", "netns", "del", name, check=False)
        gone.append(name)
    return gone


def why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    sweep_stale()
    name = f"bmt-probe-{os.getpid()}"
    proc = sh("ip", "netns", "add", name, check=False)
    if proc.returncode:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    sh("ip", "netns", "del", name, check=False)
    return ""


class Netns:
    """A named network namespace with its loopback up. Processes started with popen() are
    killed when it is deleted."""

    def __init__(self, tag: str = "t") -> None:
        self.name = f"bmt-{os.getpid()}-{tag}{next(_counter)}"
        sh("ip", "netns", "add", self.name)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        sh("ip", "-n", self.name, *args)

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(*self.cmd(*argv), check=check)

    def popen(
        self, argv: list[str], log: Path | None = None, **kw: object
    ) -> subprocess.Popen[bytes]:
        """A server in the namespace that dies with the test process, however that ends: it
        runs as the first process of a PID namespace of its own (a server's workers die with
        it), under an `unshare --kill-child` that the kernel kills when the test process dies
        (PR_SET_PDEATHSIG)."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            self.cmd("unshare", "--pid", "--fork", "--kill-child", *argv),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent, **kw,
        )  # type: ignore[call-overload]  # fmt: skip
        self.procs.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread (and what it starts) inside this namespace."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            yield
        finally:
            _setns(home)
            os.close(home)
            os.close(target)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        # Anything else still running in the namespace (sshfs, smbd's children) was started
        # by this test; end it by pid.
        pids = sh("ip", "netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", self.name, check=False)


def wait_port(ns: Netns, port: int, host: str = "127.0.0.1", seconds: float = 20) -> None:
    """Wait until something listens on host:port inside ns."""
    end = time.monotonic() + seconds
    with ns.entered():
        while True:
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.settimeout(1)
            try:
                s.connect((host, port))
                return
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"nothing listens on {host}:{port} in {ns.name}") from None
                time.sleep(0.1)
            finally:
                s.close()


class Lan:
    """A switch (a bridge in its own namespace) and hosts (namespaces) on 10.77.0.0/24, each
    joined to it by a veth pair. Multicast stays on the bridge; nothing leaves the namespaces."""

    SUBNET = "10.77.0"

    def __init__(self) -> None:
        self.switch = Netns("sw")
        self.switch.ip("link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self.switch.ip("link", "set", "br0", "up")
        self.hosts: list[Netns] = []
        self.addresses: dict[str, str] = {}

    def add(self, number: int) -> Netns:
        ns = Netns(f"h{number}-")
        port = f"p{number}"
        sh("ip", "link", "add", port, "netns", self.switch.name, "type", "veth",
           "peer", "name", "eth0", "netns", ns.name)  # fmt: skip
        self.switch.ip("link", "set", port, "master", "br0")
        self.switch.ip("link", "set", port, "up")
        addr = f"{self.SUBNET}.{number}"
        ns.ip("addr", "add", f"{addr}/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        # Multicast goes out of eth0 (there is no default route in the namespace).
        ns.ip("route", "add", "224.0.0.0/4", "dev", "eth0")
        self.hosts.append(ns)
        self.addresses[ns.name] = addr
        return ns

    def lossy(self, number: int, percent: int) -> None:
        """Lose `percent` of the UDP packets host `number` receives. This kernel has no tc
        netem (CONFIG_NET_SCH_NETEM is not set), so nftables' numgen random drops them, in
        the host's own namespace."""
        ns = next(h for h in self.hosts if self.addresses[h.name].endswith(f".{number}"))
        rules = (
            "table inet loss {\n chain input {\n  type filter hook input priority 0;\n"
            + (
                "  meta l4proto udp drop\n"
                if percent >= 100
                else f"  meta l4proto udp numgen random mod 100 < {percent} drop\n"
            )
            + " }\n}"
        )
        path = Path(f"/tmp/{ns.name}-loss.nft")
        path.write_text("flush ruleset\n" + rules + "\n")
        ns.run("nft", "-f", str(path))
        path.unlink()

    def close(self) -> None:
        for ns in reversed(self.hosts):
            ns.close()
        self.switch.close()
