"""Unattended jobs: parsing, target rules against disk lists, results on the stick."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bootmedia import unattended as u
from bootmedia.disks.model import Disk, Partition
from tests.conftest import root_only

NVME = Disk(
    name="nvme0n1",
    path="/dev/nvme0n1",
    size=512_110_190_592,
    model="Samsung SSD 980 PRO 512GB",
    serial="S5GXNF0R123456",
    transport="nvme",
)
SATA = Disk(
    name="sda",
    path="/dev/sda",
    size=1_000_204_886_016,
    model="WDC_WD10EZEX-08W",
    serial="WD-WCC6Y1234567",
    transport="sata",
    rotational=True,
)
STICK = Disk(
    name="sdb",
    path="/dev/sdb",
    size=32_015_679_488,
    model="Ultra",
    vendor="SanDisk",
    serial="4C530001234567",
    transport="usb",
    removable=True,
    partitions=(
        Partition("sdb1", "/dev/sdb1", 1, 300 << 20, fstype="iso9660", label="BOOTMEDIA_LIVE"),
        Partition("sdb3", "/dev/sdb3", 3, 31 << 30, fstype="exfat", label="BOOTMEDIA"),
    ),
)
USB_DISK = Disk(
    name="sdc",
    path="/dev/sdc",
    size=2_000_398_934_016,
    model="Expansion",
    serial="NA8F1234",
    transport="usb",
)
# A data disk that is not removable (a virtio disk in qemu) but carries the BOOTMEDIA partition.
DATA_VIRTIO = Disk(
    name="vdb",
    path="/dev/vdb",
    size=2 << 30,
    serial="bootmedia-data",
    transport="virtio",
    partitions=(Partition("vdb1", "/dev/vdb1", 1, 2 << 30, fstype="ext4", label="BOOTMEDIA"),),
)


def spec(target: str = "internal", **kw: object) -> u.JobSpec:
    data = {"action": "restore", "image": "golden", "target": target, **kw}
    return u.JobSpec.from_dict(data, "test")


# ---------------------------------------------------------------- where the job comes from


def test_cmdline_job() -> None:
    line = (
        "BOOT_IMAGE=/live/vmlinuz boot=live quiet bootmedia.job=restore bootmedia.image=golden "
        '"bootmedia.target=model:Samsung SSD*" bootmedia.after=poweroff console=ttyS0,115200'
    )
    job = u.job_from_cmdline(line)
    assert isinstance(job, u.JobSpec)
    assert (job.action, job.image, job.target, job.after) == (
        "restore",
        "golden",
        "model:Samsung SSD*",
        "poweroff",
    )
    assert job.source == "kernel command line"
    assert job.verify is True and job.countdown == 10


def test_cmdline_without_job_and_job_off() -> None:
    assert u.job_from_cmdline("boot=live quiet bootmedia.keymap=de") is None
    assert u.job_from_cmdline("boot=live bootmedia.job=off") is False


def test_toml_job_with_and_without_table() -> None:
    text = '[job]\naction = "restore"\nimage = "golden"\ntarget = "serial:ABC"\nafter = "reboot"\n'
    job = u.job_from_toml(text, "/data/bootmedia.toml")
    assert job is not None and job.after == "reboot" and job.target == "serial:ABC"
    flat = (
        'action = "restore"\nimage = "golden"\ntarget = "internal"\ncountdown = 0\nverify = false\n'
    )
    job = u.job_from_toml(flat, "x")
    assert job is not None and job.countdown == 0 and job.verify is False and job.grow is True
    no_grow = u.job_from_cmdline(
        "bootmedia.job=restore bootmedia.image=g bootmedia.target=internal bootmedia.grow=no"
    )
    assert isinstance(no_grow, u.JobSpec) and no_grow.grow is False
    assert u.job_from_toml("# nothing here\n", "x") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[job]\naction = "wipe"\nimage = "x"\ntarget = "internal"\n', "not an unattended job"),
        ('[job]\naction = "restore"\ntarget = "internal"\n', "needs an image"),
        (
            '[job]\naction = "restore"\nimage = "x"\ntarget = "internal"\nafter = "halt"\n',
            "after='halt'",
        ),
        (
            '[job]\naction = "restore"\nimage = "x"\ntarget = "internal"\ncolour = 1\n',
            "unknown setting",
        ),
        ('[job]\naction = "restore"\nimage = "x"\n', "no target rule"),
        ("[job\n", "not valid TOML"),
    ],
)
def test_toml_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(u.UnattendedError, match=message):
        u.job_from_toml(text, "bootmedia.toml")


def test_load_job_prefers_cmdline_and_honours_off(tmp_path: Path) -> None:
    (tmp_path / "bootmedia.toml").write_text(
        '[job]\naction = "restore"\nimage = "from-file"\ntarget = "internal"\n'
    )
    file_job = u.load_job("boot=live", tmp_path)
    assert file_job is not None and file_job.image == "from-file"
    assert file_job.source == str(tmp_path / "bootmedia.toml")
    cmd = u.load_job(
        "bootmedia.job=restore bootmedia.image=cmd bootmedia.target=internal", tmp_path
    )
    assert cmd is not None and cmd.image == "cmd"
    assert u.load_job("bootmedia.job=off", tmp_path) is None
    assert u.load_job("boot=live", None) is None
    assert u.load_job("boot=live", tmp_path / "missing") is None


# ---------------------------------------------------------------- target rules


def test_internal_picks_the_one_internal_disk_and_never_the_stick() -> None:
    disks = [NVME, STICK, USB_DISK, DATA_VIRTIO]
    assert u.select_target(u.parse_rule("internal"), disks) is NVME


def test_internal_with_two_internal_disks_stops_and_names_both() -> None:
    with pytest.raises(u.UnattendedError, match="matches 2 disks") as err:
        u.select_target(u.parse_rule("internal"), [NVME, SATA, STICK])
    assert "S5GXNF0R123456" in str(err.value) and "WD-WCC6Y1234567" in str(err.value)


def test_combined_conditions_narrow_the_match() -> None:
    disks = [NVME, SATA, STICK]
    assert u.select_target(u.parse_rule("internal,transport:nvme"), disks) is NVME
    assert u.select_target(u.parse_rule("serial:wd-wcc6y1234567"), disks) is SATA
    assert u.select_target(u.parse_rule("model:samsung ssd*"), disks) is NVME
    assert u.select_target(u.parse_rule("model:WDC WD10*"), disks) is SATA  # "_" reads as a space
    assert u.select_target(u.parse_rule("internal,size:>=900G"), disks) is SATA
    assert u.select_target(u.parse_rule("internal,size:<=600GB"), disks) is NVME


def test_no_match_lists_the_disks_that_are_there() -> None:
    with pytest.raises(u.UnattendedError, match="no disk matches") as err:
        u.select_target(u.parse_rule("serial:NOPE"), [NVME, STICK])
    assert "Samsung SSD 980 PRO" in str(err.value)
    with pytest.raises(u.UnattendedError, match="no disks at all"):
        u.select_target(u.parse_rule("internal"), [STICK])


def test_the_stick_is_never_a_target_even_by_serial() -> None:
    with pytest.raises(u.UnattendedError, match="no disk matches"):
        u.select_target(u.parse_rule("serial:4C530001234567"), [NVME, STICK])


def test_a_refused_match_stops_instead_of_falling_back() -> None:
    def refuse_nvme(disk: Disk) -> str | None:
        return "a partition is mounted" if disk is NVME else None

    with pytest.raises(u.UnattendedError, match="refused: a partition is mounted"):
        u.select_target(u.parse_rule("internal,transport:nvme"), [NVME, SATA], refuse_nvme)


@pytest.mark.parametrize("name", ["sda", "/dev/sda", "nvme0n1", "/dev/vdb", "mmcblk0", "loop3"])
def test_kernel_names_are_refused_as_rules(name: str) -> None:
    with pytest.raises(u.UnattendedError, match="kernel name"):
        u.parse_rule(name)


@pytest.mark.parametrize("text", ["", "serial:", "internal:yes", "biggest", "size:100G"])
def test_bad_rules(text: str) -> None:
    with pytest.raises(u.UnattendedError):
        u.parse_rule(text)


def test_rule_round_trips_to_text() -> None:
    assert str(u.parse_rule(" internal , serial:ABC ")) == "internal,serial:ABC"


# ---------------------------------------------------------------- resolving and results


def _has(images: dict[Path, set[str]]):
    return lambda path, name: name in images.get(path, set())


def test_resolve_finds_the_only_repo_with_the_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "old").mkdir()
    has = _has({tmp_path / "images": {"golden"}, tmp_path / "old": {"other"}})
    job = u.resolve_job(
        spec(), [NVME, STICK], data_dir=tmp_path, refusal=None, has_image=has, machine={}
    )
    assert job.target is NVME and job.repo == tmp_path / "images"
    assert any("S5GXNF0R123456" in line for line in job.describe())


def test_resolve_with_named_repo_and_missing_image(tmp_path: Path) -> None:
    has = _has({tmp_path / "images": {"golden"}})
    job = u.resolve_job(
        spec(repo="images"), [NVME], data_dir=tmp_path, refusal=None, has_image=has, machine={}
    )
    assert job.repo == tmp_path / "images"
    with pytest.raises(u.UnattendedError, match="no image named 'golden'"):
        u.resolve_job(spec(repo="other"), [NVME], data_dir=tmp_path, refusal=None, has_image=has)
    with pytest.raises(u.UnattendedError, match="no repository"):
        u.resolve_job(spec(), [NVME], data_dir=tmp_path, refusal=None, has_image=_has({}))


def test_result_file_and_no_second_run_on_the_same_machine(tmp_path: Path) -> None:
    machine = {"hostname": "bootmedia", "serial": "PF3ABC12", "uuid": "4c4c4544-0042"}
    has = _has({tmp_path: {"golden"}})
    job = u.resolve_job(
        spec(), [NVME], data_dir=tmp_path, refusal=None, has_image=has, machine=machine
    )
    result = u.JobResult("success", True, "restored and verified", 1_700_000_000.0, 1_700_000_093.5)
    path = u.write_result(tmp_path, job, result, machine)
    assert path.parent == tmp_path / "results"
    assert path.name == "20231114-221453-PF3ABC12-S5GXNF0R123456.json"
    doc = json.loads(path.read_text())
    assert doc["status"] == "success" and doc["verified"] is True
    assert doc["target"]["serial"] == "S5GXNF0R123456" and doc["job"]["image"] == "golden"
    assert doc["seconds"] == 93.5 and doc["started"] == "2023-11-14T22:13:20Z"
    assert json.loads((tmp_path / "results" / "last.json").read_text()) == doc
    assert not list((tmp_path / "results").glob("*.tmp"))
    # The stick is still in after `after = "reboot"`: the same job must not run again.
    with pytest.raises(u.AlreadyDone, match="already restored"):
        u.resolve_job(
            spec(), [NVME], data_dir=tmp_path, refusal=None, has_image=has, machine=machine
        )
    # The next laptop of the batch is a different machine: it runs.
    other = {**machine, "serial": "PF3XYZ99", "uuid": "4c4c4544-0099"}
    u.resolve_job(spec(), [NVME], data_dir=tmp_path, refusal=None, has_image=has, machine=other)


def test_failed_result_does_not_block_a_retry(tmp_path: Path) -> None:
    machine = {"serial": "PF3ABC12"}
    has = _has({tmp_path: {"golden"}})
    job = u.resolve_job(
        spec(), [NVME], data_dir=tmp_path, refusal=None, has_image=has, machine=machine
    )
    u.write_result(tmp_path, job, u.JobResult("failed", False, "disk full", 1.0, 2.0), machine)
    again = u.resolve_job(
        spec(), [NVME], data_dir=tmp_path, refusal=None, has_image=has, machine=machine
    )
    assert again.target is NVME


def test_find_job_reads_cmdline_file(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("boot=live quiet\n")
    assert u.find_job([NVME], cmdline_path=cmdline, data_dir=tmp_path) is None
    cmdline.write_text(
        "boot=live bootmedia.job=restore bootmedia.image=golden bootmedia.target=sda\n"
    )
    with pytest.raises(u.UnattendedError, match="kernel name"):
        u.find_job([NVME], cmdline_path=cmdline, data_dir=tmp_path)


def test_a_job_that_stops_is_recorded_once_on_the_stick(tmp_path: Path) -> None:
    data, locks = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("bootmedia.job=restore bootmedia.image=golden bootmedia.target=internal")
    for _ in range(2):  # tty1 and ttyS0 both look
        with pytest.raises(u.UnattendedError, match="matches 2 disks"):
            u.find_job([NVME, SATA], cmdline_path=cmdline, data_dir=data, lock_dir=locks)
    results = sorted((data / "results").glob("2*.json"))
    assert len(results) == 1
    doc = json.loads(results[0].read_text())
    assert doc["status"] == "stopped" and "matches 2 disks" in doc["message"]
    assert doc["job"]["image"] == "golden" and "target" not in doc


def test_claim_job_once_per_boot(tmp_path: Path) -> None:
    assert u.claim_job(tmp_path) is True
    assert u.claim_job(tmp_path) is False


def test_machine_identity_reads_dmi(tmp_path: Path) -> None:
    (tmp_path / "product_serial").write_text("PF3ABC12\n")
    (tmp_path / "sys_vendor").write_text("LENOVO\n")
    ident = u.machine_identity(tmp_path)
    assert ident["serial"] == "PF3ABC12" and ident["vendor"] == "LENOVO" and "uuid" not in ident


def test_after_command() -> None:
    assert u.after_command("poweroff") == ["systemctl", "poweroff"]
    assert u.after_command("reboot") == ["systemctl", "reboot"]
    assert u.after_command("stay") is None


# ---------------------------------------------------------------- with the engine, on loop devices


@root_only
def test_run_restore_with_the_engine(tmp_path: Path) -> None:
    from bootmedia import lab
    from bootmedia.cli import main
    from bootmedia.disks import find_disk
    from bootmedia.progress import Reporter

    source = lab.make_file(tmp_path / "source.img", 64 << 20)
    subprocess.run(["sfdisk", "-q", str(source)], input=b"label: gpt\ntype=linux\n", check=True)
    target = lab.make_file(tmp_path / "target.img", 96 << 20)
    repo = tmp_path / "data" / "images"
    with lab.loop_disk(source) as src:
        subprocess.run(["mkfs.ext4", "-q", "-L", "golden", f"{src}p1"], check=True)
        argv = ["--log-dir", str(tmp_path), "capture", src, str(repo), "--name", "golden", "-q"]
        assert main(argv) == 0
    assert u.repo_has_image(repo, "golden") and not u.repo_has_image(repo, "other")
    with lab.loop_disk(target) as tgt:
        spec = u.JobSpec.from_dict(
            {"action": "restore", "image": "golden", "target": "internal"}, "test"
        )
        job = u.ResolvedJob(spec, find_disk(tgt), repo, tmp_path / "data")
        result = u.run_restore(job, Reporter())
        assert (result.status, result.verified) == ("success", True), result.message
        label = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "LABEL", f"{tgt}p1"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        assert label == "golden"
        path = u.write_result(tmp_path / "data", job, result, {"serial": "LAB1"})
    assert json.loads(path.read_text())["status"] == "success"


@root_only
def test_run_restore_records_a_failure_instead_of_raising(tmp_path: Path) -> None:
    from bootmedia import lab
    from bootmedia.disks import find_disk
    from bootmedia.progress import Reporter

    target = lab.make_file(tmp_path / "target.img", 16 << 20)
    with lab.loop_disk(target) as tgt:
        spec = u.JobSpec.from_dict(
            {"action": "restore", "image": "nope", "target": "internal"}, "t"
        )
        job = u.ResolvedJob(spec, find_disk(tgt), tmp_path / "no-repo", None)
        result = u.run_restore(job, Reporter())
    assert result.status == "failed" and not result.verified and result.message
