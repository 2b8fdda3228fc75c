"""The unattended job's [job.customize] keys: parsing and refusals (no root), and a real
restore + customize on loop devices whose result lands in the stick's result file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia import unattended as u
from bootmedia.cli import main
from bootmedia.customize.unattended import CustomizeSpec
from bootmedia.disks.model import Disk
from bootmedia.errors import BootmediaError
from tests import customize_disks as cd
from tests.test_customize_loop import linux_disk

MiB = 1 << 20
VDA = Disk(name="vda", path="/dev/vda", size=1 << 30, serial="T1", transport="virtio")
TOML = """
[job]
action = "restore"
image = "golden"
target = "internal"

[job.customize]
hostname = "unat-{n:02}"
new_ssh_keys = true
hooks = ["hooks/10-ok.sh"]
"""


def test_toml_customize_keys() -> None:
    spec = u.job_from_toml(TOML, "stick")
    assert spec is not None and spec.customize is not None
    c = spec.customize
    assert (c.hostname, c.new_ssh_keys, c.new_machine_id, c.boot_entry) == (
        "unat-{n:02}",
        True,
        True,
        False,
    )
    assert c.hooks == ("hooks/10-ok.sh",)
    assert "Then customize: name 'unat-{n:02}'" in "\n".join(
        u.ResolvedJob(spec, VDA, Path("/r"), None).describe()
    )


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('colour = "red"', "unknown customize setting"),
        ('names_csv = "n.csv"', "hostname or names_csv, not both"),
        ("boot_entry = 3", "boot_entry must be true or false"),
        ("hooks_dir = 7", "hooks_dir must be a string"),
    ],
)
def test_toml_customize_refusals(extra: str, error: str) -> None:
    with pytest.raises(u.UnattendedError, match=error):
        u.job_from_toml(TOML + extra + "\n", "stick")


def test_bad_pattern_refused_before_any_countdown() -> None:
    with pytest.raises(u.UnattendedError, match="unknown field"):
        u.job_from_toml(TOML.replace("unat-{n:02}", "pc-{bogus}"), "stick")


def test_customize_needs_verify() -> None:
    text = TOML.replace('target = "internal"', 'target = "internal"\nverify = false')
    with pytest.raises(u.UnattendedError, match="after a verified restore"):
        u.job_from_toml(text, "stick")


def test_cmdline_customize_keys() -> None:
    spec = u.job_from_cmdline(
        "quiet bootmedia.job=restore bootmedia.image=golden bootmedia.target=internal "
        "bootmedia.names_csv=names.csv bootmedia.boot_entry=1"
    )
    assert isinstance(spec, u.JobSpec) and spec.customize is not None
    assert spec.customize.names_csv == "names.csv" and spec.customize.boot_entry
    assert CustomizeSpec.from_cmdline({"image": "x"}) is None


def test_paths_found_on_the_stick_then_in_the_repo(tmp_path: Path) -> None:
    stick, repo = tmp_path / "stick", tmp_path / "repo"
    (stick / "hooks").mkdir(parents=True)
    repo.mkdir()
    (repo / "names.csv").write_text("S1,pc-one\n")
    hook = stick / "hooks" / "10-ok.sh"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    spec = CustomizeSpec(names_csv="names.csv", hooks=("hooks/10-ok.sh",))
    opts = spec.options(repo=repo, data_dir=stick, image="golden")
    assert opts.rule is not None and opts.rule.value == str(repo / "names.csv")
    assert opts.hooks == (str(hook),)
    assert opts.machines == 2  # a mass deploy: a non-sysprepped Windows is warned about
    (stick / "names.csv").write_text("S1,pc-stick\n")
    opts = spec.options(repo=repo, data_dir=stick, image="golden")
    assert opts.rule is not None and opts.rule.value == str(stick / "names.csv")
    with pytest.raises(BootmediaError, match=r"customize names_csv missing\.csv: not found"):
        CustomizeSpec(names_csv="missing.csv").options(repo=repo, data_dir=stick, image="g")


def test_unattended_restore_then_customize(loopdev: Callable[..., str], tmp_path: Path) -> None:
    from bootmedia.disks import find_disk
    from bootmedia.progress import Reporter

    src, _, _ = linux_disk(loopdev, "ext4")
    data = tmp_path / "data"
    repo = data / "images"
    assert (
        main(["--log-dir", str(tmp_path), "capture", src, str(repo), "--name", "golden", "-q"]) == 0
    )
    (data / "hooks").mkdir()
    hook = data / "hooks" / "10-ok.sh"
    hook.write_text(
        f'#!/bin/sh\necho "$BOOTMEDIA_HOSTNAME $BOOTMEDIA_DISK" > {tmp_path}/hook.out\n'
    )
    hook.chmod(0o755)
    spec = u.job_from_toml(TOML.replace('"internal"', '"transport:loop"'), "stick")
    assert spec is not None
    dst = loopdev(420 * MiB)
    job = u.resolve_job(spec, [find_disk(dst)], data_dir=data, refusal=None)
    result = u.run_restore(job, Reporter())
    assert result.status == "success", result.message
    assert "customized: name unat-01" in result.message
    assert cd.read_ext4(f"{dst}p2", "/etc/hostname") == "unat-01\n"
    assert (tmp_path / "hook.out").read_text() == f"unat-01 {dst}\n"
    path = u.write_result(data, job, result, {"serial": "LAB1"})
    doc = json.loads(path.read_text())
    assert doc["customize"]["name"] == "unat-01"
    assert any("SSH host key" in c["what"] for c in doc["customize"]["changes"])
    assert doc["job"]["customize"]["hostname"] == "unat-{n:02}"


def test_unattended_bad_name_writes_nothing(loopdev: Callable[..., str], tmp_path: Path) -> None:
    from bootmedia.disks import find_disk
    from bootmedia.progress import Reporter

    src, _, _ = linux_disk(loopdev, "ext4")
    repo = tmp_path / "data" / "images"
    assert (
        main(["--log-dir", str(tmp_path), "capture", src, str(repo), "--name", "golden", "-q"]) == 0
    )
    spec = u.job_from_toml(
        TOML.replace("unat-{n:02}", "unat_{n:02}")
        .replace('"internal"', '"transport:loop"')
        .replace('hooks = ["hooks/10-ok.sh"]\n', ""),
        "stick",
    )
    assert spec is not None
    dst = loopdev(420 * MiB)
    job = u.resolve_job(spec, [find_disk(dst)], data_dir=tmp_path / "data", refusal=None)
    result = u.run_restore(job, Reporter())
    assert result.status == "failed" and "RFC 1123" in result.message
    with open(dst, "rb") as f:
        assert f.read(MiB) == bytes(MiB)
