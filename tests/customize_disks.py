"""Restored-looking disks for the customize tests: real GPT, real mkfs, real files, real hives.

There is no Windows here, so the SYSTEM hive is built the way the issue allows: an empty hive
(a base block and one bin holding the root key and its security cell, laid out as the REGF
format says) is the seed, and every key and value in it is then added by hivex's own writer.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from pathlib import Path

import hivex

from tests.disktools import sh

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
GRUB = b"MZ fake grubx64.efi " + os.urandom(3000)
SHIM = b"MZ fake shimx64.efi " + os.urandom(5000)
BOOTMGFW = b"MZ fake bootmgfw.efi " + os.urandom(4000)


def partitions(dev: str, parts: list[tuple[int, str]]) -> list[str]:
    """GPT with (size MiB, type GUID) partitions (size 0 = the rest); returns their nodes."""
    script = "label: gpt\n" + "".join(
        f"size={mib}MiB, type={t}\n" if mib else f"type={t}\n" for mib, t in parts
    )
    sh("sfdisk", "-q", dev, input=script)
    sh("partx", "-u", dev)
    nodes = [f"{dev}p{i}" for i in range(1, len(parts) + 1)]
    for n in nodes:
        assert Path(n).exists(), n
    return nodes


def make_esp(node: str, loaders: dict[str, bytes], fallback: bool = False) -> None:
    sh("mkfs.vfat", "-F", "32", "-n", "ESP", node)
    dirs = sorted({p.rsplit("/", 1)[0] for p in loaders} | ({"EFI/BOOT"} if fallback else set()))
    made: set[str] = set()
    for d in dirs:
        parts = d.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                sh("mmd", "-i", node, f"::/{sub}")
                made.add(sub)
    with tempfile.TemporaryDirectory() as tmp:
        for path, data in loaders.items():
            src = Path(tmp) / "f"
            src.write_bytes(data)
            sh("mcopy", "-i", node, str(src), f"::/{path}")
        if fallback:
            src = Path(tmp) / "f"
            src.write_bytes(next(iter(loaders.values())))
            sh("mcopy", "-i", node, str(src), "::/EFI/BOOT/BOOTX64.EFI")


def blkid(node: str, tag: str) -> str:
    return sh("blkid", "-o", "value", "-s", tag, node).strip()


def make_linux_root(
    node: str,
    fstype: str,
    *,
    hostname: str = "golden",
    dbus: str = "file",
    subvol: str = "",
    hosts: str | None = None,
) -> None:
    """A Debian-like root: os-release, fstab naming it as /, hostname, hosts, ids, SSH keys."""
    mkfs = {
        "ext4": ["mkfs.ext4", "-q", "-F"],
        "btrfs": ["mkfs.btrfs", "-q", "-f"],
        "xfs": ["mkfs.xfs", "-q", "-f"],
    }
    sh(*mkfs[fstype], node)
    uuid = blkid(node, "UUID")
    with tempfile.TemporaryDirectory() as mnt:
        sh("mount", node, mnt)
        try:
            top = Path(mnt)
            if subvol:
                sh("btrfs", "-q", "subvolume", "create", str(top / subvol))
                top = top / subvol
            etc = top / "etc"
            (etc / "ssh").mkdir(parents=True)
            (etc / "systemd" / "system").mkdir(parents=True)
            (etc / "os-release").write_text(
                'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
            )
            opts = f"subvol={subvol}" if subvol else "errors=remount-ro"
            (etc / "fstab").write_text(
                f"# /etc/fstab\nUUID={uuid} / {fstype} {opts} 0 1\n"
                "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n"
            )
            (etc / "hostname").write_text(hostname + "\n")
            (etc / "hosts").write_text(
                hosts
                if hosts is not None
                else f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n::1\tlocalhost ip6-localhost\n"
            )
            (etc / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
            dbusdir = top / "var" / "lib" / "dbus"
            dbusdir.mkdir(parents=True)
            if dbus == "file":
                (dbusdir / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
            elif dbus == "symlink":
                (dbusdir / "machine-id").symlink_to("/etc/machine-id")
            for kind in ("rsa", "ed25519"):
                (etc / "ssh" / f"ssh_host_{kind}_key").write_text(f"PRIVATE {kind}\n")
                (etc / "ssh" / f"ssh_host_{kind}_key.pub").write_text(f"PUBLIC {kind}\n")
        finally:
            sh("umount", mnt)


def read_ext4(node: str, path: str) -> str:
    """Read a file with debugfs: e2fsprogs' own reader, no mount involved."""
    out = subprocess.run(
        ["debugfs", "-R", f"cat {path}", node], capture_output=True, text=True, check=True
    )
    return out.stdout


# ---- Windows ------------------------------------------------------------------------------


def empty_hive(name: str = "SYSTEM") -> bytes:
    """A hive holding only its root key (REGF base block + one 4 KiB bin): the seed hivex needs,
    since hivex edits hives but does not create them."""
    nk_off, sk_off = 0x20, 0x20 + 0x58
    keyname = b"ROOT"
    nk = (
        b"nk"
        + struct.pack(
            "<HQIIIIIIIIIIIIIIIHH",
            0x2C,  # KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
            0,
            0,
            0xFFFFFFFF,  # no parent
            0,
            0,
            0xFFFFFFFF,
            0xFFFFFFFF,
            0,
            0xFFFFFFFF,
            sk_off,
            0xFFFFFFFF,
            0,
            0,
            0,
            0,
            0,
            len(keyname),
            0,
        )
        + keyname
    )
    nk_cell = struct.pack("<i", -0x58) + nk.ljust(0x54, b"\0")
    sd = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)  # self-relative, empty descriptor
    sk = b"sk" + struct.pack("<HIIII", 0, sk_off, sk_off, 1, len(sd)) + sd
    sk_cell = struct.pack("<i", -0x30) + sk.ljust(0x2C, b"\0")
    used = 0x20 + len(nk_cell) + len(sk_cell)
    free = struct.pack("<i", 0x1000 - used).ljust(0x1000 - used, b"\0")
    hbin = b"hbin" + struct.pack("<III", 0, 0x1000, 0).ljust(28, b"\0") + nk_cell + sk_cell + free
    base = bytearray(0x1000)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, nk_off, 0x1000, 1)
    base[0x30 : 0x30 + 64] = name.encode("utf-16-le").ljust(64, b"\0")[:64]
    csum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:0x1FC])):
        csum ^= word
    struct.pack_into("<I", base, 0x1FC, csum)
    return bytes(base) + hbin


def _sz(value: str) -> dict[str, object]:
    return {"t": 1, "value": (value + "\0").encode("utf-16-le")}


def _dword(value: int) -> dict[str, object]:
    return {"t": 4, "value": struct.pack("<I", value)}


def build_system_hive(path: Path, name: str = "GOLDEN", generalized: bool = False) -> None:
    """A SYSTEM hive shaped like Windows 10's, where it matters here, written by hivex."""
    path.write_bytes(empty_hive())
    h = hivex.Hivex(str(path), write=True)
    root = h.root()

    def key(parent: int, *names: str) -> int:
        node = parent
        for n in names:
            node = h.node_get_child(node, n) or h.node_add_child(node, n)
        return node

    def values(node: int, **vals: dict[str, object]) -> None:
        h.node_set_values(node, [{"key": k.replace("_", " "), **v} for k, v in vals.items()])

    values(key(root, "Select"), Current=_dword(1), Default=_dword(1), LastKnownGood=_dword(2))
    for cs in ("ControlSet001", "ControlSet002"):
        values(key(root, cs, "Control", "ComputerName", "ComputerName"), ComputerName=_sz(name))
        values(
            key(root, cs, "Services", "Tcpip", "Parameters"),
            Hostname=_sz(name.lower()),
            NV_Hostname=_sz(name.lower()),
            Domain=_sz(""),
        )
    setup = key(root, "Setup")
    if generalized:
        values(setup, SystemSetupInProgress=_dword(1), CmdLine=_sz("oobe\\windeploy.exe"))
        values(key(setup, "Status", "SysprepStatus"), GeneralizationState=_dword(7))
    else:
        values(setup, SystemSetupInProgress=_dword(0), CmdLine=_sz(""))
        values(key(setup, "Status", "SysprepStatus"), GeneralizationState=_dword(4))
    h.commit(None)


def make_windows_volume(node: str, *, name: str = "GOLDEN", generalized: bool = False) -> None:
    sh("mkfs.ntfs", "-Q", "-F", "-L", "Windows", node)
    with tempfile.TemporaryDirectory() as tmp:
        hive = Path(tmp) / "SYSTEM"
        build_system_hive(hive, name, generalized)
        with tempfile.TemporaryDirectory() as mnt:
            sh("mount", "-t", "ntfs-3g", node, mnt)
            try:
                config = Path(mnt) / "Windows" / "System32" / "config"
                config.mkdir(parents=True)
                (config / "SYSTEM").write_bytes(hive.read_bytes())
                if generalized:
                    state = Path(mnt) / "Windows" / "Setup" / "State"
                    state.mkdir(parents=True)
                    (state / "State.ini").write_bytes(
                        "[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n".encode(
                            "utf-16"
                        )
                    )
            finally:
                sh("umount", mnt)


def reged_export(hive: Path, out: Path) -> str:
    """chntpw's reged (its own hive parser, not hivex) exports the whole hive as a .reg file."""
    subprocess.run(
        ["reged", "-x", str(hive), "HKEY_LOCAL_MACHINE\\SYSTEM", "\\", str(out)],
        capture_output=True,
        check=True,
    )
    return out.read_bytes().decode("utf-8", errors="replace")
