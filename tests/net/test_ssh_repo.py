"""ssh:// repositories against a real OpenSSH sshd in a namespace: capture, list, verify,
restore and delete through the CLI, on loop devices; and a capture killed on the share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.errors import BootmediaError
from bootmedia.net import mount
from bootmedia.repo.store import Repository
from tests import sample
from tests.net.conftest import cli
from tests.net.netns import Netns
from tests.net.servers import PasswordSshd, Sshd

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def unmount_all(tmp: Path) -> None:
    for mp in (tmp / "mnt").glob("*"):
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True, check=False)


def test_capture_list_verify_restore_delete_over_ssh(
    netns: Netns, sshd: Sshd, loopdev, tmp_path: Path
) -> None:
    src = loopdev(160 * MiB)
    layout = sample.build(src, "gpt")
    want = sample.sums(src, layout)
    remote = tmp_path / "server" / "repo"
    remote.mkdir(parents=True)
    url = sshd.url(remote)
    creds = ("--credentials", str(sshd.credentials))
    try:
        proc = cli(netns, tmp_path, *creds, "capture", src, url, "--name", "golden", "-q")
        assert proc.returncode == 0, proc.stderr
        assert "captured golden" in proc.stdout
        # The bytes are on the server's side, in the usual layout.
        assert (remote / "images" / "golden" / "manifest.json").is_file()
        assert list((remote / "packs").glob("pack-*"))
        assert not list((tmp_path / "mnt").glob("*/*")), "the command unmounts what it mounted"

        listed = cli(netns, tmp_path, *creds, "images", url, "--json")
        assert listed.returncode == 0, listed.stderr
        assert [m["name"] for m in json.loads(listed.stdout)["images"]] == ["golden"]

        ok = cli(netns, tmp_path, *creds, "verify", url, "golden")
        assert ok.returncode == 0, ok.stderr + ok.stdout

        dst = loopdev(160 * MiB)
        restored = cli(
            netns, tmp_path, *creds, "apply", url, "golden", dst, "--confirm", Path(dst).name, "-q"
        )
        assert restored.returncode == 0, restored.stderr
        assert "verified" in restored.stdout
        lab.run(["partx", "-u", dst], check=False)
        assert sample.sums(dst, layout) == want

        gone = cli(netns, tmp_path, *creds, "delete", url, "golden")
        assert gone.returncode == 0, gone.stderr
        assert not (remote / "images" / "golden").exists()
    finally:
        unmount_all(tmp_path)
    # Nothing of the password-less login leaks into the log.
    log = "\n".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    assert sshd.key.read_text() not in log


def test_wrong_key_or_missing_path_is_one_line(netns: Netns, sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    creds = tmp_path / "bad.toml"
    creds.write_text(
        f'[[share]]\nurl = "ssh://root@127.0.0.1:{sshd.port}"\nkey = "{other}"\n'
        f'known_hosts = "{sshd.known_hosts}"\n'
    )
    (tmp_path / "r").mkdir()
    proc = cli(netns, tmp_path, "--credentials", str(creds), "images", sshd.url(tmp_path / "r"))
    assert proc.returncode != 0
    # run()'s one line: the URL, the sshfs command itself, its exit status and stderr's tail.
    assert f"{sshd.url(tmp_path / 'r')}: sshfs " in proc.stderr, proc.stderr
    assert "failed (exit" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    missing = cli(
        netns, tmp_path, "--credentials", str(sshd.credentials), "images",
        sshd.url(tmp_path / "nope"),
    )  # fmt: skip
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "nope" in missing.stderr
    unmount_all(tmp_path)


def test_capture_killed_on_the_share_lists_nothing_and_the_retry_reuses_chunks(
    netns: Netns, sshd: Sshd, loopdev, tmp_path: Path
) -> None:
    src = loopdev(320 * MiB)
    lab.populate_sample_disk(src, "gpt", fill=0.7, seed=5)
    remote = tmp_path / "server" / "repo"
    remote.mkdir(parents=True)
    url = sshd.url(remote)
    creds = ("--credentials", str(sshd.credentials))
    env = dict(
        os.environ, BOOTMEDIA_NET_DIR=str(tmp_path / "mnt"), BOOTMEDIA_LOG_DIR=str(tmp_path / "log")
    )
    try:
        proc = subprocess.Popen(
            netns.cmd(sys.executable, "-m", "bootmedia", *creds, "capture", src, url, "--name", "img", "-q"),
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            packs = list((remote / "packs").glob("pack-*")) if (remote / "packs").exists() else []
            if packs and sum(p.stat().st_size for p in packs) > 24 * MiB:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the capture finished before it could be killed"
        # ip netns exec execs python in place: proc.pid is bootmedia itself.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stored_before = sum(p.stat().st_size for p in (remote / "packs").glob("pack-*"))
        assert stored_before > 0
        listed = cli(netns, tmp_path, *creds, "images", url, "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["images"] == []
        retry = cli(netns, tmp_path, *creds, "capture", src, url, "--name", "img", "-q")
        assert retry.returncode == 0, retry.stderr
        with_images = json.loads(cli(netns, tmp_path, *creds, "images", url, "--json").stdout)
        (img,) = with_images["images"]
        assert img["new_bytes"] < img["stored_bytes"] * 0.9, "the retry should reuse stored chunks"
        ok = cli(netns, tmp_path, *creds, "verify", url, "img")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert not list((remote / "tmp").iterdir()), "the dead capture's scratch is cleaned up"
    finally:
        unmount_all(tmp_path)


def test_capture_and_restore_with_a_password_over_ssh(
    netns: Netns, password_sshd: PasswordSshd, loopdev, tmp_path: Path
) -> None:
    """A server that takes only passwords: the password comes from the credentials file and
    goes to sshfs on its standard input (password_stdin), never into a command line or log."""
    src = loopdev(160 * MiB)
    layout = sample.build(src, "gpt", seed=3)
    want = sample.sums(src, layout)
    remote = tmp_path / "server" / "repo"
    remote.mkdir(parents=True)
    url = password_sshd.url(remote)
    creds = ("--credentials", str(password_sshd.credentials(tmp_path / "creds.toml")))
    try:
        proc = cli(netns, tmp_path, *creds, "capture", src, url, "--name", "pw", "-q")
        assert proc.returncode == 0, proc.stderr
        assert (remote / "images" / "pw" / "manifest.json").is_file()
        dst = loopdev(160 * MiB)
        restored = cli(
            netns, tmp_path, *creds, "apply", url, "pw", dst, "--confirm", Path(dst).name, "-q"
        )
        assert restored.returncode == 0, restored.stderr
        assert "verified" in restored.stdout
        lab.run(["partx", "-u", dst], check=False)
        assert sample.sums(dst, layout) == want
    finally:
        unmount_all(tmp_path)
    # sshd saw password logins, as the test user (not a key, not root).
    server_log = password_sshd.log.read_text()
    assert f"Accepted password for {password_sshd.user}" in server_log, server_log[-2000:]
    log = "\n".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    assert "+ sshfs " in log and "password_stdin" in log
    for text in (log, proc.stdout, proc.stderr, restored.stdout, restored.stderr):
        assert password_sshd.password not in text


def test_a_wrong_password_over_ssh_is_one_line_and_nothing_is_mounted(
    netns: Netns, password_sshd: PasswordSshd, tmp_path: Path
) -> None:
    (tmp_path / "r").mkdir()
    url = password_sshd.url(tmp_path / "r")
    bad = password_sshd.credentials(tmp_path / "bad.toml", password="not-the-password")
    proc = cli(netns, tmp_path, "--credentials", str(bad), "images", url)
    unmount_all(tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"bootmedia: error: {url}: ssh "), proc.stderr
    assert "failed (exit 255)" in proc.stderr and "Permission denied (password)." in proc.stderr
    assert "not-the-password" not in proc.stderr
    assert f"Failed password for {password_sshd.user}" in password_sshd.log.read_text()
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path / "mnt") not in f.read(), "a refused login leaves no mount"
    log = "\n".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    assert "not-the-password" not in log


def test_the_tui_prompt_gives_the_password_when_the_server_asks_for_one(
    netns: Netns, password_sshd: PasswordSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect() with a prompt (what the TUI's share screen passes): a server that refuses
    keys makes it ask, once, naming the user and server; the answer mounts the share; a wrong
    answer is one line."""
    monkeypatch.setattr(mount, "MOUNT_ROOT", tmp_path / "mnt")
    remote = tmp_path / "server" / "repo"
    remote.mkdir(parents=True)
    Repository.init(remote).close()
    # The host key is pinned (no password in the file): nothing is added to root's own
    # ~/.ssh/known_hosts.
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(
        f'[[share]]\nurl = "ssh://{password_sshd.user}@127.0.0.1:{password_sshd.port}"\n'
        f'known_hosts = "{password_sshd.known_hosts}"\n'
    )
    url = password_sshd.url(remote)
    asked: list[str] = []

    def prompt(_url: object, what: str) -> str:
        asked.append(what)
        return answer

    answer = "wrong, wrong"
    with netns.entered():
        with pytest.raises(BootmediaError) as bad:
            mount.connect(url, credentials_file=pinned, prompt=prompt)
        assert "Permission denied (password)." in str(bad.value), bad.value
        assert "\n" not in str(bad.value)
        assert answer not in str(bad.value)
        answer = password_sshd.password
        local = mount.connect(url, credentials_file=pinned, prompt=prompt)
        try:
            assert Path(local, "bootmedia-repo.json").is_file()
            with Repository.open(local) as repo:
                assert repo.images() == []
        finally:
            mount.unmount(mount.Share(mount.parse_url(url), Path(local)))
    host = f"{password_sshd.user}@127.0.0.1"
    assert asked == [f"password for {host}"] * 2
