"""build_iso.sh recovers from an interrupted build (issue 8, item 18): the mounts a killed
debootstrap or chroot left inside the build directory are unmounted, deepest first, before the
directory is removed; nothing outside it is touched."""

from __future__ import annotations

import codecs
import subprocess
from pathlib import Path

import pytest

from tests.conftest import root_only

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [root_only, pytest.mark.root]


def _mounts_under(path: Path) -> list[str]:
    out = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout
    base = str(path.resolve())
    targets = [codecs.decode(t, "unicode_escape") for t in out.splitlines()]  # "\x20" is a blank
    return [t for t in targets if t == base or t.startswith(base + "/")]


def _cleanup(*args: str) -> subprocess.CompletedProcess[str]:
    script = f". {ROOT / 'live' / 'cleanup.sh'}; " + " ".join(args)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)


@pytest.fixture
def interrupted(tmp_path: Path):
    """A build directory as a killed build leaves it: proc, sys, run and a nested dev/pts."""
    build = tmp_path / "build live"  # a blank in the path: findmnt escapes it
    rootfs = build / "rootfs"
    for sub in ("proc", "sys", "run", "dev", "etc"):
        (rootfs / sub).mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("live\n")
    keep = tmp_path / "keep"  # a directory a bind mount exposes: must survive the cleanup
    keep.mkdir()
    (keep / "precious").write_text("do not delete\n")
    mounts = [
        ["mount", "-t", "proc", "proc", str(rootfs / "proc")],
        ["mount", "-t", "sysfs", "sysfs", str(rootfs / "sys")],
        ["mount", "--bind", str(keep), str(rootfs / "run")],
        ["mount", "-t", "tmpfs", "tmpfs", str(rootfs / "dev")],
    ]
    for argv in mounts:
        subprocess.run(argv, check=True)
    (rootfs / "dev" / "pts").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(rootfs / "dev" / "pts")], check=True)
    yield build, keep
    for target in _mounts_under(tmp_path):  # only when the test failed
        subprocess.run(["umount", "-l", target], check=False)


def test_plain_rm_fails_on_a_left_proc_mount(interrupted) -> None:
    """Round 1's build_iso.sh did this and every later build failed."""
    build, _ = interrupted
    proc = subprocess.run(["rm", "-rf", str(build / "rootfs" / "proc")], capture_output=True)
    assert proc.returncode != 0


def test_remove_build_dir_unmounts_then_removes(interrupted) -> None:
    build, keep = interrupted
    assert len(_mounts_under(build)) == 5
    proc = _cleanup("remove_build_dir", f"'{build}'")
    assert proc.returncode == 0, proc.stderr
    assert _mounts_under(build) == []
    assert not build.exists()
    assert (keep / "precious").read_text() == "do not delete\n", "cleanup crossed a bind mount"
    # Deepest first: dev/pts before dev.
    lines = [x for x in proc.stderr.splitlines() if "unmounting" in x]
    assert len(lines) == 5
    pts = next(
        i for i, x in enumerate(lines) if x.endswith("/dev/pts (left by an interrupted build)")
    )
    dev = next(i for i, x in enumerate(lines) if x.endswith("/dev (left by an interrupted build)"))
    assert pts < dev


def test_missing_directory_is_fine(tmp_path: Path) -> None:
    proc = _cleanup("remove_build_dir", str(tmp_path / "nothing"), "&& echo ok")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok"


def test_build_iso_uses_the_cleanup() -> None:
    """Every build directory build_iso.sh removes goes through remove_build_dir."""
    text = (ROOT / "build_iso.sh").read_text()
    assert ". live/cleanup.sh" in text
    assert 'unmount_under "$BUILD_DIR"' in text
    # ...after taking the build lock, so it never unmounts a running build's chroot.
    assert text.index("flock -n 9") < text.index('unmount_under "$BUILD_DIR"')
    for var in ("$rootfs", "$base", "$iso", "$wheels"):
        assert f'remove_build_dir "{var}"' in text, var
        assert f'rm -rf "{var}"' not in text, var
