"""Unattended jobs whose repository is on the network: `repo = "http://..."` or "ssh://...",
with the key from the credentials file on the stick; restored and verified on a loop disk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia import unattended as u
from bootmedia.capture import capture_image, plan_capture
from bootmedia.disks import find_disk
from bootmedia.net import mount
from bootmedia.net.credentials import FILE_NAME
from bootmedia.progress import Reporter
from tests.net.netns import Netns
from tests.net.servers import Nginx, Sshd

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20


@pytest.fixture
def golden(tmp_path: Path, served: Path) -> Path:
    source = lab.make_file(tmp_path / "source.img", 64 * MiB)
    subprocess.run(["sfdisk", "-q", str(source)], input=b"label: gpt\ntype=linux\n", check=True)
    with lab.loop_disk(source) as src:
        subprocess.run(["mkfs.ext4", "-q", "-L", "golden", f"{src}p1"], check=True)
        capture_image(plan_capture(src, served / "repo", "golden"))
    return served / "repo"


def _restore(repo_url: str, data: Path, tmp_path: Path, monkeypatch) -> dict:
    monkeypatch.setattr(mount, "MOUNT_ROOT", tmp_path / "mnt")
    spec = u.JobSpec.from_dict(
        {"action": "restore", "image": "golden", "target": "internal", "repo": repo_url}, "test"
    )
    repo = u.find_repo(spec, data, u.repo_has_image)
    target = lab.make_file(tmp_path / "target.img", 96 * MiB)
    with lab.loop_disk(target) as tgt:
        job = u.ResolvedJob(spec, find_disk(tgt), repo, data)
        assert any(repo_url in line for line in job.describe()), job.describe()
        result = u.run_restore(job, Reporter())
        assert (result.status, result.verified) == ("success", True), result.message
        label = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "LABEL", f"{tgt}p1"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        assert label == "golden"
        path = u.write_result(data, job, result, {"serial": "LAB1"})
    return json.loads(path.read_text())


def test_unattended_restore_from_an_http_repository(
    netns: Netns, nginx: Nginx, golden: Path, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with netns.entered():
        doc = _restore(nginx.url("repo"), data, tmp_path, monkeypatch)
    assert doc["status"] == "success" and doc["repo"] == nginx.url("repo")


def test_unattended_restore_from_an_ssh_repository_with_the_sticks_key(
    netns: Netns, sshd: Sshd, golden: Path, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    shutil.copy(sshd.key, data / "keys" / "id_ed25519")
    shutil.copy(sshd.known_hosts, data / "keys" / "known_hosts")
    (data / FILE_NAME).write_text(
        f'[[share]]\nurl = "ssh://root@127.0.0.1:{sshd.port}"\nkey = "keys/id_ed25519"\n'
        'known_hosts = "keys/known_hosts"\n'
    )
    url = sshd.url(golden)
    try:
        with netns.entered():
            doc = _restore(url, data, tmp_path, monkeypatch)
        assert doc["status"] == "success" and doc["repo"] == url
    finally:
        for mp in (tmp_path / "mnt").glob("ssh-*"):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)


def test_unattended_job_with_an_unreachable_share_stops_with_one_line(
    netns: Netns, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(mount, "MOUNT_ROOT", tmp_path / "mnt")
    spec = u.JobSpec.from_dict(
        {"action": "restore", "image": "golden", "target": "internal",
         "repo": "http://127.0.0.1:9/repo"}, "test",
    )  # fmt: skip
    with netns.entered(), pytest.raises(u.UnattendedError) as err:
        u.find_repo(spec, None, u.repo_has_image)
    assert "cannot connect" in str(err.value), err.value
