"""Session fixtures for the e2e tests: the live ISO, the golden disk and the stick's data disk.

Everything is built from scratch each session (caches under /var/cache/bootmedia-build only
speed up the debootstrap stages, keyed by their inputs). BOOTMEDIA_E2E_ISO=path reuses an ISO
already built from this tree, for quick iteration on the tests themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import golden
from tests.e2e.harness import OVMF_CODE, run

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "e2e"
MiB = 1 << 20


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (debootstrap, loop devices, chroot)"
    for tool in (
        "qemu-system-x86_64",
        "debootstrap",
        "grub-mkrescue",
        "grub-install",
        "mksquashfs",
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/deps.sh installs it)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices"
    return ""


WHY_NOT = _missing()
e2e = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "e2e prerequisites missing")
needs_ovmf = pytest.mark.skipif(not OVMF_CODE.exists(), reason="OVMF is not installed (ovmf)")


def _log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@pytest.fixture(scope="session")
def work() -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    return WORK


@pytest.fixture(scope="session")
def live_iso(work: Path) -> Path:
    """out/bootmedia.iso as build_iso.sh makes it from this tree."""
    given = os.environ.get("BOOTMEDIA_E2E_ISO")
    if given:
        return Path(given)
    out = work / "out"
    env = dict(os.environ, OUT_DIR=str(out), BUILD_DIR=str(work / "live"))
    started = time.monotonic()
    with open(work / "build_iso.log", "wb") as log:
        proc = subprocess.run(
            [str(ROOT / "build_iso.sh")], env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if proc.returncode != 0:
        tail = (work / "build_iso.log").read_text(errors="replace")[-3000:]
        pytest.fail(f"build_iso.sh failed ({proc.returncode}):\n{tail}")
    iso = out / "bootmedia.iso"
    _log(f"built {iso} ({iso.stat().st_size // MiB} MiB) in {time.monotonic() - started:.0f} s")
    assert iso.stat().st_size < 400 * MiB
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        assert (out / "netboot" / name).stat().st_size > 0
    return iso


@pytest.fixture(scope="session")
def golden_disk(work: Path) -> Path:
    started = time.monotonic()
    path = golden.build_golden_disk(work / "golden.img")
    _log(f"golden disk ready in {time.monotonic() - started:.0f} s")
    return path


@pytest.fixture(scope="session")
def data_disk_template(work: Path, golden_disk: Path) -> Path:
    """The stick's data partition on its own disk: ext4 labelled BOOTMEDIA, holding a
    repository (images/) with the golden disk captured by `bootmedia capture` on this host."""
    from bootmedia import lab

    path = work / "data-template.img"
    lab.make_file(path, 1024 * MiB)
    run(["sfdisk", "--quiet", str(path)], input="label: gpt\ntype=linux, name=BOOTMEDIA\n")
    with lab.loop_disk(path) as dev, lab.loop_disk(golden_disk, read_only=True) as gold:
        part = f"{dev}p1"
        run(["mkfs.ext4", "-q", "-L", "BOOTMEDIA", part])
        mnt = work / "mnt-data"
        mnt.mkdir(exist_ok=True)
        run(["mount", part, str(mnt)])
        try:
            shutil.rmtree(mnt / "lost+found", ignore_errors=True)
            run(
                [
                    *_bootmedia(),
                    "--log-dir",
                    str(work),
                    "capture",
                    gold,
                    str(mnt / "images"),
                    "--name",
                    "golden",
                    "--description",
                    "e2e golden: Debian 12 minbase, BIOS+UEFI",
                    "--quiet",
                ]
            )
        finally:
            run(["umount", str(mnt)])
    return path


def _bootmedia() -> list[str]:
    import sys

    return [sys.executable, "-m", "bootmedia"]


@pytest.fixture
def disks(
    work: Path, request: pytest.FixtureRequest, data_disk_template: Path
) -> Iterator[dict[str, Path]]:
    """Per test: a blank 1 GiB target and a copy of the data disk, in a folder of its own."""
    folder = work / request.node.name.replace("[", "-").replace("]", "")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = folder / "target.img"
    with open(target, "wb") as f:
        f.truncate(1024 * MiB)
    data = folder / "data.img"
    run(["cp", "--sparse=always", str(data_disk_template), str(data)])
    yield {"dir": folder, "target": target, "data": data}
