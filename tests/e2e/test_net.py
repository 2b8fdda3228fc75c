"""Network e2e (issue 11), in qemu inside a network namespace this test creates: qemu's user
network reaches the namespace's loopback as 10.0.2.2, where the test starts nginx, smbd and
nfs-ganesha. Nothing leaves the namespace.

- The live system is netbooted as a PXE site does it (docs/LIVE.md), with no kernel given to
  qemu: the firmware (SeaBIOS) boots the NIC first, whose option ROM is iPXE (Debian's
  ipxe-qemu, efi-virtio.rom); iPXE asks DHCP (qemu's user network stands in for dnsmasq) and
  gets the URL of the site's boot.ipxe, the wrapper of docs/LIVE.md, which chains
  build_iso.sh's bootmedia.ipxe as built; that loads kernel and initrd over HTTP from nginx,
  and live-boot fetches the squashfs from there. SeaBIOS's debug port (a log file) shows the
  NIC's ROM was the boot device. (SeaBIOS and the ROM's iPXE print to the VGA screen only,
  never to the serial console: an earlier session took that silence for a ROM that never ran.)
- Shares: SMB (mount.cifs, vers=3.0) and NFS (mount.nfs, vers=4.2) mounted by the live system's
  kernel (the host has no cifs or nfs module): restore from SMB, capture onto NFS and SMB,
  verify, delete.
- Then the disk restored over SMB boots by itself (the target alone, BIOS) to its login prompt.
- In the same netboot (one VM boot fewer for the suite): bootmedia.keymap= on the kernel command
  line reaches the console's keyboard, the live kernel mounts an exFAT partition (make-usb's
  default data filesystem; this host has no exfat module), and the TUI -> root shell -> TUI
  round trip ends with a power-off from the menu.
- A second netboot (issue 11's PXE bullet), unattended: the site's boot.ipxe passes a restore
  job from the http:// repository nginx serves in ${bootmedia-args} (docs/LIVE.md's wrapper
  example). No key is pressed: the machine restores, writes its result to a small BOOTMEDIA
  data disk and powers off; the restored disk then boots by itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia import stick as sticks
from tests.e2e.conftest import e2e
from tests.e2e.harness import VM, Drive, run
from tests.e2e.test_live import (
    BOOT_TIMEOUT,
    RESTORE_TIMEOUT,
    TARGET_SERIAL,
    _boot_restored,
    _read_from_ext4,
    _write_to_ext4,
)
from tests.net.netns import Netns
from tests.net.servers import start_ganesha, start_nginx, start_smbd

pytestmark = [e2e, pytest.mark.slow, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[2]
HTTP_PORT = 8080
NETBOOT_FILES = ("bootmedia.ipxe", "vmlinuz", "initrd.img", "filesystem.squashfs")


class NsVM(VM):
    """A VM whose qemu runs inside a network namespace and boots from its NIC: DHCP (qemu's
    user network) names a boot file, and the NIC is the first boot device, so the firmware
    runs the NIC's option ROM (iPXE). SeaBIOS's debug output goes to a file."""

    ns_name: str = ""
    bootfile: str = ""

    @property
    def firmware_log(self) -> Path:
        return self.workdir / f"{self.name}-seabios.log"

    def argv(self) -> list[str]:
        argv = super().argv()
        nic = argv.index("-nic")
        assert argv[nic + 1] == "user,model=virtio-net-pci", argv[nic + 1]
        # DHCP's filename, as dnsmasq's dhcp-boot=; the NIC at bootindex 0, before the disks
        # (1, 2...). Its ROM is qemu's default for the NIC, Debian's ipxe-qemu efi-virtio.rom
        # (the test checks it): naming that same file with romfile= makes SeaBIOS skip the
        # ROM's boot entry on this qemu (7.2), which is what "the ROM never runs" was.
        argv[nic : nic + 2] = [
            "-netdev", f"user,id=net0,bootfile={self.bootfile}",
            "-device", "virtio-net-pci,netdev=net0,bootindex=0",
            "-chardev", f"file,id=seabios,path={self.firmware_log}",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios",
        ]  # fmt: skip
        return ["ip", "netns", "exec", self.ns_name, *argv]


@pytest.fixture(scope="module")
def golden_repo(work: Path, golden_disk: Path) -> Path:
    """The golden disk captured into a repository the servers publish."""
    repo = work / "net-golden" / "repo"
    if not (repo / "images" / "golden" / "manifest.json").exists():
        shutil.rmtree(repo.parent, ignore_errors=True)
        with lab.loop_disk(golden_disk, read_only=True) as gold:
            subprocess.run(
                [sys.executable, "-m", "bootmedia", "--log-dir", str(work), "capture", gold,
                 str(repo), "--name", "golden", "-q"],
                check=True, cwd=ROOT,
            )  # fmt: skip
    return repo


@pytest.fixture
def ns() -> Iterator[Netns]:
    n = Netns("e2e")
    try:
        yield n
    finally:
        n.close()


def _exfat_disk(folder: Path) -> Path:
    """A disk with one exFAT partition, made by mkfs.exfat."""
    path = lab.make_file(folder / "exfat.img", 64 << 20)
    run(["sfdisk", "--quiet", str(path)], input=f"label: gpt\ntype={sticks.GPT_TYPES['exfat']}\n")
    with lab.loop_disk(path) as dev:
        run(["mkfs.exfat", "-L", "E2EEXFAT", f"{dev}p1"])
    return path


# The site's wrapper of docs/LIVE.md ("A wrapper script sets both and chains it"), with this
# test's server and one extra kernel parameter.
def _boot_ipxe(args: str) -> str:
    return f"""\
#!ipxe
set base http://10.0.2.2:{HTTP_PORT}/netboot
set bootmedia-args {args}
chain ${{base}}/bootmedia.ipxe
"""


BOOT_IPXE = _boot_ipxe("bootmedia.keymap=de")
# The unattended netboot's wrapper: docs/LIVE.md's example, with this test's server.
REPO_URL = f"http://10.0.2.2:{HTTP_PORT}/repo"
JOB_ARGS = (
    "bootmedia.job=restore bootmedia.image=golden bootmedia.target=internal "
    f"bootmedia.repo={REPO_URL} bootmedia.after=poweroff bootmedia.countdown=5"
)


def _www(folder: Path, live_iso: Path, repo: Path, boot_ipxe: str = BOOT_IPXE) -> Path:
    www = folder / "www"
    www.mkdir()
    (www / "netboot").symlink_to(live_iso.parent / "netboot")
    (www / "repo").symlink_to(repo)
    (www / "boot.ipxe").write_text(boot_ipxe)
    return www


SCRIPT = """\
D=/dev/vda  # the target: the first virtio disk
S='smb://root@10.0.2.2/images/repo?vers=3.0'
N='nfs://10.0.2.2/export/repo?vers=4.2'
run() {{ name=$1; shift; echo "+ $*"; "$@"; echo "RC-$name=$?"; }}
echo "CMDLINE: $(cat /proc/cmdline)"
run SMB-IMAGES bootmedia images "$S"
run SMB-APPLY bootmedia apply "$S" golden "$D" --confirm {code} -q
run NFS-CAPTURE bootmedia capture "$D" "$N" --name fromvm -q
run NFS-VERIFY bootmedia verify "$N" fromvm
run SMB-CAPTURE bootmedia capture "$D" "$S" --name fromvm-smb -q
run SMB-DELETE bootmedia delete "$S" fromvm-smb
grep -c cifs /proc/mounts; echo MOUNTS-LEFT
dumpkeys -C /dev/tty1 | grep -m1 '^keycode  21'
mkdir -p /mnt/exfat && mount LABEL=E2EEXFAT /mnt/exfat && findmnt -n -o FSTYPE /mnt/exfat \
  && touch /mnt/exfat/written && ls /mnt/exfat && umount /mnt/exfat
echo NET-E2E-DONE
"""


def test_smb_and_nfs_shares_mounted_by_the_live_kernel(
    live_iso: Path, disks: dict[str, Path], golden_repo: Path, ns: Netns
) -> None:
    work = disks["dir"]
    www = _www(work, live_iso, golden_repo)
    nginx = start_nginx(ns, work / "nginx", www, port=HTTP_PORT)
    share = work / "smb-share"
    shutil.copytree(golden_repo, share / "repo")
    smbd = start_smbd(ns, work / "smbd", share)
    export = work / "nfs-export"
    (export / "repo").mkdir(parents=True)
    start_ganesha(ns, work / "ganesha", export)
    creds = f'[[share]]\nurl = "smb://root@10.0.2.2/images"\npassword = "{smbd.password}"\n'
    script = SCRIPT.format(code=TARGET_SERIAL[-4:])
    with lab.loop_disk(disks["data"]) as dev:
        _write_to_ext4(f"{dev}p1", "bootmedia-credentials.toml", creds, work)
        _write_to_ext4(f"{dev}p1", "net-e2e.sh", script, work)
    vm = NsVM(
        work,
        firmware="bios",
        drives=[
            Drive(disks["target"], TARGET_SERIAL),
            Drive(disks["data"], "E2E-DATA-NET"),
            Drive(_exfat_disk(work), "E2E-EXFAT"),
        ],
        name="shares",
        network=True,
    )
    vm.ns_name = ns.name
    vm.bootfile = f"http://10.0.2.2:{HTTP_PORT}/boot.ipxe"
    screen = vm.start()
    try:
        # The NIC's option ROM is Debian's iPXE build for qemu (ipxe-qemu).
        assert 'romfile = "efi-virtio.rom"' in vm.monitor("info qtree")
        screen.wait_for(r"What do you want to do\?", BOOT_TIMEOUT)
        screen.press("\x11")  # Ctrl+Q, then yes to "Quit bootmedia?": the root shell
        screen.wait_for(r"Quit bootmedia\?", 60)
        screen.press("y")
        screen.wait_for(r"root@bootmedia:~#", 120)
        screen.type(
            "sh /run/bootmedia/data/net-e2e.sh >/run/bootmedia/data/net-e2e.log 2>&1; sync; exit\r"
        )
        # `exit` in the root shell brings the TUI back; it powers the machine off.
        screen.wait_for(r"What do you want to do\?", RESTORE_TIMEOUT * 2)
        screen.press("o")  # Home's "Power off or reboot"
        screen.wait_for(r"Reboot or power off this machine now\?", 60)
        screen.press("o")  # power off
        assert vm.wait_exit(180) == 0
    finally:
        vm.stop()
    with lab.loop_disk(disks["data"]) as dev:
        out = _read_from_ext4(f"{dev}p1", "net-e2e.log", work)
    (work / "net-e2e.log").write_text(out)
    assert "NET-E2E-DONE" in out, out
    # The firmware booted the NIC's ROM first (SeaBIOS says "Booting from ROM" for a NIC's
    # boot entry), and no kernel was handed to qemu: the NIC's iPXE fetched everything.
    assert "-kernel" not in vm.argv()
    firmware = vm.firmware_log.read_text(errors="replace")
    booting = [ln for ln in firmware.splitlines() if ln.startswith("Booting from")]
    assert booting[:1] == ["Booting from ROM..."], firmware[-3000:]
    # The boot went firmware PXE -> iPXE -> DHCP -> boot.ipxe -> bootmedia.ipxe -> kernel and initrd over HTTP, then
    # live-boot's fetch of the squashfs, every file whole (nginx's log: uri, status, bytes sent).
    got = [ln.split() for ln in nginx.access_log.read_text().splitlines()]
    boot = [(ln[3], int(ln[6])) for ln in got if ln[4] == "200" and not ln[3].startswith("/repo/")]
    names = ["boot.ipxe", *(f"netboot/{n}" for n in NETBOOT_FILES)]
    assert boot[:5] == [(f"/{n}", (www / n).stat().st_size) for n in names], got
    # The kernel line is bootmedia.ipxe's, with the wrapper's ${base} and ${bootmedia-args}.
    ipxe = (live_iso.parent / "netboot" / "bootmedia.ipxe").read_text()
    kernel = next(ln for ln in ipxe.splitlines() if ln.startswith("kernel "))
    want = kernel.split(None, 2)[2].replace("${base}", f"http://10.0.2.2:{HTTP_PORT}/netboot")
    want = want.replace("${bootmedia-args}", "bootmedia.keymap=de")
    assert re.search(rf"^CMDLINE: .*{re.escape(want)}", out, re.M), out
    # bootmedia.keymap=de reached the console's keyboard: QWERTZ, key 21 is z.
    assert re.search(r"^keycode  21 = \+z", out, re.M), out
    assert re.search(r"^exfat\nwritten$", out, re.M), out
    for step in (
        "SMB-IMAGES",
        "SMB-APPLY",
        "NFS-CAPTURE",
        "NFS-VERIFY",
        "SMB-CAPTURE",
        "SMB-DELETE",
    ):
        assert f"RC-{step}=0" in out, out
    assert "golden" in out
    # The bytes are on the servers' side.
    assert (export / "repo" / "images" / "fromvm" / "manifest.json").is_file()
    assert list((export / "repo" / "packs").glob("pack-*"))
    assert not (share / "repo" / "images" / "fromvm-smb").exists()  # deleted over SMB
    assert smbd.password not in out  # never on a command line or in the output
    # The disk restored over SMB by the netbooted live system boots on its own (BIOS).
    assert "golden login:" in _boot_restored(work, disks["target"], "bios")


def _data_disk(folder: Path) -> Path:
    """A small disk with an empty ext4 partition labelled BOOTMEDIA: where the unattended job
    writes its result (a netbooted machine has no stick; with no data partition there is no
    result file, docs/LIVE.md)."""
    path = lab.make_file(folder / "pxe-data.img", 64 << 20)
    run(["sfdisk", "--quiet", str(path)], input="label: gpt\ntype=linux, name=BOOTMEDIA\n")
    with lab.loop_disk(path) as dev:
        run(["mkfs.ext4", "-q", "-L", "BOOTMEDIA", f"{dev}p1"])
    return path


def test_pxe_unattended_restore_from_an_http_repository_then_the_disk_boots(
    live_iso: Path, disks: dict[str, Path], golden_repo: Path, ns: Netns
) -> None:
    """Issue 11's PXE bullet: the NIC's ROM netboots the live system from nginx, the site's
    boot.ipxe hands it an unattended restore from the http:// repository nginx serves, and with
    no key pressed the machine restores, records the result and powers off; then the restored
    disk boots by itself."""
    work = disks["dir"]
    url = REPO_URL
    www = _www(work, live_iso, golden_repo, _boot_ipxe(JOB_ARGS))
    nginx = start_nginx(ns, work / "nginx", www, port=HTTP_PORT)
    data = _data_disk(work)
    vm = NsVM(
        work,
        firmware="bios",
        drives=[Drive(disks["target"], TARGET_SERIAL), Drive(data, "E2E-DATA-PXE")],
        name="pxe-unattended",
        network=True,
    )
    vm.ns_name = ns.name
    vm.bootfile = f"http://10.0.2.2:{HTTP_PORT}/boot.ipxe"
    vm.start()
    try:
        # No key is pressed from here on: the job powers the machine off.
        assert vm.wait_exit(BOOT_TIMEOUT + RESTORE_TIMEOUT) == 0
    finally:
        vm.stop()
    firmware = vm.firmware_log.read_text(errors="replace")
    booting = [ln for ln in firmware.splitlines() if ln.startswith("Booting from")]
    assert booting[:1] == ["Booting from ROM..."], firmware[-3000:]
    # nginx's log (uri, status, bytes sent): the boot files whole, in order, then the job's
    # reads of the repository, every one a 200 or a 206 (Range), none before the live system ran.
    got = [ln.split() for ln in nginx.access_log.read_text().splitlines()]
    names = ["boot.ipxe", *(f"netboot/{n}" for n in NETBOOT_FILES)]
    assert [(ln[3], ln[4], int(ln[6])) for ln in got[:5]] == [
        (f"/{n}", "200", (www / n).stat().st_size) for n in names
    ], got
    repo = got[5:]
    assert repo and all(ln[3].startswith("/repo/") for ln in repo), got
    assert all(ln[4] in ("200", "206") for ln in repo), repo
    assert "/repo/images/golden/manifest.json" in [ln[3] for ln in repo], repo
    # the packs' chunks as Range requests (their .idx files come whole; HEADs ask sizes)
    packs = [
        ln
        for ln in repo
        if ln[2] == "GET" and ln[3].startswith("/repo/packs/") and ln[3].endswith(".bmp")
    ]
    assert packs and all(ln[4] == "206" for ln in packs), repo
    # The result the job left on the data partition.
    with lab.loop_disk(data) as dev:
        result = json.loads(_read_from_ext4(f"{dev}p1", "results/last.json", work))
    assert result["status"] == "success", result
    assert result["verified"] is True, result
    assert result["repo"] == url, result
    assert result["job"]["image"] == "golden", result
    assert result["target"]["serial"] == TARGET_SERIAL, result
    # The disk restored from the http:// repository boots on its own (BIOS).
    assert "golden login:" in _boot_restored(work, disks["target"], "bios")
