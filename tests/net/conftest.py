"""Fixtures of the network tests: a namespace per test, real servers started inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture
from tests import sample
from tests.net.netns import Netns, why_not
from tests.net.servers import (
    Nginx,
    PasswordSshd,
    Smbd,
    Sshd,
    start_nginx,
    start_password_sshd,
    start_smbd,
    start_sshd,
)

ROOT = Path(__file__).resolve().parents[2]
WHY_NOT = why_not()
# The repository, the disk's layout, and the disk's files' checksums.
Golden = tuple[Path, tuple[lab.SamplePart, ...], dict[int, dict[str, str]]]
needs_netns = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "network namespaces missing")


def bootmedia_cmd(ns: Netns, *args: str) -> list[str]:
    """The real CLI's argv, run inside the namespace."""
    return ns.cmd(sys.executable, "-m", "bootmedia", *args)


def cli_env(tmp: Path, **more: str) -> dict[str, str]:
    """The CLI's environment in a test: its network mounts and its log in tmp."""
    return dict(
        os.environ, BOOTMEDIA_NET_DIR=str(tmp / "mnt"), BOOTMEDIA_LOG_DIR=str(tmp / "log"), **more
    )


def cli(ns: Netns, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, inside the namespace, as a technician runs it (mounts and logs in tmp)."""
    return subprocess.run(
        bootmedia_cmd(ns, *args), capture_output=True, text=True, env=cli_env(tmp), cwd=ROOT,
        check=False,
    )  # fmt: skip


@pytest.fixture
def netns() -> Iterator[Netns]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def sshd(netns: Netns, tmp_path: Path) -> Sshd:
    return start_sshd(netns, tmp_path / "sshd")


@pytest.fixture
def password_sshd(netns: Netns, tmp_path: Path) -> PasswordSshd:
    return start_password_sshd(netns, tmp_path / "sshd-pw")


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """The directory nginx serves (tests put a repository in it)."""
    path = tmp_path / "www"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def golden_repo(tmp_path_factory: pytest.TempPathFactory) -> Golden:
    """One disk (GPT: vfat, ext4, ntfs, swap) captured once per session: every read-only
    repository test publishes a copy of it (building and capturing it took ~3 s a test)."""
    can, why = lab.can_use_loop()
    if not can:
        pytest.skip(why or "loop devices unavailable")
    base = tmp_path_factory.mktemp("net-golden")
    image = lab.make_file(base / "source.img", 128 << 20)
    with lab.loop_disk(image) as src:
        layout = sample.build(src, "gpt")
        want = sample.sums(src, layout)
        capture_image(plan_capture(src, base / "repo", "golden"))
    image.unlink()
    return base / "repo", layout, want


@pytest.fixture
def golden(golden_repo: Golden, served: Path) -> Golden:
    """The session's golden repository in served/repo (what the web server publishes), as
    hard links: a test may add files (index pages) but no test writes into a repository file."""
    repo, layout, want = golden_repo
    subprocess.run(["cp", "-al", str(repo), str(served / "repo")], check=True)
    return served / "repo", layout, want


@pytest.fixture
def nginx(netns: Netns, tmp_path: Path, served: Path) -> Nginx:
    return start_nginx(netns, tmp_path / "nginx", served)


@pytest.fixture
def smbd(netns: Netns, tmp_path: Path) -> Smbd:
    share = tmp_path / "share"
    share.mkdir()
    return start_smbd(netns, tmp_path / "smbd", share)
