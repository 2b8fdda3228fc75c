"""The e2e harness: qemu under TCG, a serial console read through a terminal emulator (pyte), the
qemu monitor for VT screenshots, and PPM -> PNG without extra packages.

A technician reads a screen, not a byte stream, so the tests do the same: everything the guest
sends to ttyS0 goes through pyte, and `wait_for()` looks at the 80x25 screen as drawn. The raw
bytes go to a log file next to the test's disks for when something fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pyte

COLS, ROWS = 80, 25
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

KEYS = {
    "enter": "\r",
    "escape": "\x1b",
    "tab": "\t",
    "backspace": "\x7f",
    "up": "\x1b[A",
    "down": "\x1b[B",
    "right": "\x1b[C",
    "left": "\x1b[D",
    "pageup": "\x1b[5~",
    "pagedown": "\x1b[6~",
    "f5": "\x1b[15~",
}


class ScreenTimeout(AssertionError):
    pass


class Screen:
    """A terminal as the technician sees it, fed from a pexpect child (the serial console)."""

    def __init__(self, child: pexpect.spawn, log: Path, cols: int = COLS, rows: int = ROWS) -> None:
        self.child = child
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.log = open(log, "ab")  # noqa: SIM115 - closed by close()
        self.raw = bytearray()  # everything, for text that scrolls past (boot messages)

    def close(self) -> None:
        self.log.close()

    def pump(self, timeout: float = 0.2) -> bool:
        """Read what is there (waiting up to timeout); False once the child is gone."""
        try:
            data = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        self.log.write(data)
        self.log.flush()
        self.raw += data
        self.stream.feed(data)
        return True

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, pattern: str, timeout: float, *, raw: bool = False) -> re.Match[str]:
        """Wait until the screen (or, with raw=True, the whole output) matches the regex."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            haystack = self.raw.decode(errors="replace") if raw else self.text()
            m = regex.search(haystack)
            if m:
                return m
            if time.monotonic() > deadline:
                raise ScreenTimeout(
                    f"waited {timeout:.0f} s for {pattern!r}; the screen shows:\n{self.text()}"
                )
            if not self.pump(0.3):
                haystack = self.raw.decode(errors="replace") if raw else self.text()
                m = regex.search(haystack)
                if m:
                    return m
                raise ScreenTimeout(
                    f"qemu exited while waiting for {pattern!r}; last screen:\n{self.text()}"
                )

    def settle(self, quiet: float = 1.0, timeout: float = 20) -> None:
        """Wait until nothing has arrived for `quiet` seconds (the UI finished drawing)."""
        deadline = time.monotonic() + timeout
        last = len(self.raw)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if not self.pump(0.2):
                return
            if len(self.raw) != last:
                last, quiet_since = len(self.raw), time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return

    def press(self, *keys: str, pause: float = 0.4) -> None:
        """Press keys by name (enter, down, escape...) or type literal text."""
        for key in keys:
            self.child.send(KEYS.get(key, key))
            # Textual tells a lone Escape from an escape sequence by timing; keep keys apart.
            end = time.monotonic() + pause
            while time.monotonic() < end:
                self.pump(0.05)

    def type(self, text: str) -> None:
        for ch in text:
            self.press(ch, pause=0.15)


@dataclass
class Drive:
    path: Path
    serial: str
    usb: bool = False  # a USB stick (usb-storage on xHCI) instead of an internal virtio disk


@dataclass
class VM:
    """One qemu machine: q35, TCG (KVM hangs on this kind of host), serial on stdio."""

    workdir: Path
    firmware: str = "bios"  # bios or uefi
    cdrom: Path | None = None
    drives: Sequence[Drive] = ()
    memory: int = 2048
    name: str = "vm"
    network: bool = (
        False  # qemu user networking: the guest reaches the host's 127.0.0.1 as 10.0.2.2
    )
    extra: Sequence[str] = ()
    # UEFI variables kept across boots (a "reboot" of the same machine): made from OVMF's
    # template on first use; None = fresh variables at every start.
    vars_file: Path | None = None
    child: pexpect.spawn | None = field(default=None, init=False)
    screen: Screen | None = field(default=None, init=False)

    @property
    def monitor_path(self) -> Path:
        # A unix socket path must be under 108 bytes, and a CI checkout can live anywhere deep:
        # keep the socket in a short directory of its own, not in the work dir.
        short = Path(tempfile.gettempdir()) / f"bm-e2e-{os.getpid()}"
        short.mkdir(exist_ok=True)
        return short / f"{self.name}.monitor"

    def argv(self) -> list[str]:
        qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        accel = os.environ.get("BOOTMEDIA_E2E_ACCEL", "tcg")
        argv = [qemu, "-machine", f"q35,accel={accel}", "-m", str(self.memory), "-smp", "2"]
        nic = "user,model=virtio-net-pci" if self.network else "none"
        argv += ["-display", "none", "-vga", "std", "-nic", nic, "-no-reboot"]
        argv += ["-serial", "stdio", "-monitor", f"unix:{self.monitor_path},server=on,wait=off"]
        if self.firmware == "uefi":
            vars_copy = self.vars_file or self.workdir / f"{self.name}-OVMF_VARS.fd"
            if self.vars_file is None or not vars_copy.exists():
                shutil.copyfile(OVMF_VARS, vars_copy)
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"]
            argv += ["-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        boot = 1
        if self.cdrom is not None:
            argv += ["-drive", f"file={self.cdrom},if=none,id=cd0,media=cdrom,readonly=on"]
            argv += ["-device", f"ide-cd,drive=cd0,bus=ide.0,bootindex={boot}"]
            boot += 1
        if any(d.usb for d in self.drives):
            argv += ["-device", "qemu-xhci,id=xhci"]
        for i, drive in enumerate(self.drives):
            # cache=unsafe: nothing survives a host crash anyway, and guest flushes cost seconds.
            argv += ["-drive", f"file={drive.path},if=none,id=d{i},format=raw,cache=unsafe"]
            device = "usb-storage,bus=xhci.0,removable=on" if drive.usb else "virtio-blk-pci"
            argv += ["-device", f"{device},drive=d{i},serial={drive.serial},bootindex={boot}"]
            boot += 1
        return [*argv, *self.extra]

    def start(self) -> Screen:
        self.monitor_path.unlink(missing_ok=True)
        argv = self.argv()
        (self.workdir / f"{self.name}.cmd").write_text(" ".join(argv) + "\n")
        self.child = pexpect.spawn(argv[0], argv[1:], echo=False, timeout=None)
        self.child.setwinsize(ROWS, COLS)
        self.screen = Screen(self.child, self.workdir / f"{self.name}-serial.log")
        return self.screen

    def monitor(self, command: str, timeout: float = 10) -> str:
        """Run one qemu monitor command and return its output."""
        deadline = time.monotonic() + timeout
        while not self.monitor_path.exists():
            if time.monotonic() > deadline:
                raise AssertionError("qemu monitor socket never appeared")
            time.sleep(0.1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.monitor_path))
            out = _read_until(s, b"(qemu) ")
            s.sendall(command.encode() + b"\n")
            out = _read_until(s, b"(qemu) ")
        return out.decode(errors="replace")

    def screendump(self, png: Path) -> Path:
        """The VGA screen (tty1) as a PNG."""
        ppm = png.with_suffix(".ppm")
        ppm.unlink(missing_ok=True)
        self.monitor(f"screendump {ppm}")
        deadline = time.monotonic() + 60  # qemu writes it between TCG slices: slow when loaded
        while not ppm.exists() or ppm.stat().st_size == 0:
            if time.monotonic() > deadline:
                raise AssertionError("screendump wrote nothing")
            time.sleep(0.1)
        time.sleep(0.2)
        png.parent.mkdir(parents=True, exist_ok=True)
        ppm_to_png(ppm, png)
        ppm.unlink()
        return png

    def steady_screendump(self, png: Path, *, wait: float = 8, timeout: float = 40) -> Path:
        """A screendump once tty1 has stopped changing (its TUI loads on its own schedule)."""
        time.sleep(wait)
        deadline = time.monotonic() + timeout
        previous = self.screendump(png).read_bytes()
        while time.monotonic() < deadline:
            time.sleep(3)
            current = self.screendump(png).read_bytes()
            if current == previous:
                break
            previous = current
        return png

    def send_key(self, keys: str) -> None:
        """Keys on the VGA console's keyboard (monitor sendkey syntax: ctrl-alt-f2, ret, a)."""
        self.monitor(f"sendkey {keys}")

    def wait_exit(self, timeout: float) -> int:
        """Wait for the guest to power off (qemu exits); keeps reading the console meanwhile."""
        assert self.child is not None and self.screen is not None
        deadline = time.monotonic() + timeout
        while self.screen.pump(0.5):
            if time.monotonic() > deadline:
                raise ScreenTimeout(
                    f"qemu still running after {timeout:.0f} s; the screen shows:\n"
                    f"{self.screen.text()}"
                )
        self.child.wait()
        return int(self.child.exitstatus or 0)

    def stop(self) -> None:
        if self.child is not None and self.child.isalive():
            self.child.terminate(force=True)
        if self.screen is not None:
            self.screen.close()


def _read_until(s: socket.socket, marker: bytes) -> bytes:
    buf = b""
    while not buf.endswith(marker):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def ppm_to_png(ppm: Path, png: Path) -> None:
    """Convert qemu's binary PPM (P6) screendump to PNG with zlib alone."""
    data = ppm.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255:
        raise ValueError(f"{ppm}: not an 8-bit P6 PPM")
    pixels = data[pos + 1 : pos + 1 + width * height * 3]
    stride = width * 3
    rows = b"".join(b"\0" + pixels[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a host command for test setup; fail with its stderr."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc
