"""Unattended jobs against hostile or careless input (issue 8, item 15). Each of these crashed,
or skipped a safety check, in round 1; now each is one clear refusal or a correct result."""

from __future__ import annotations

import ast
import codecs
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bootmedia import unattended as u
from bootmedia.disks.model import Disk

ROOT = Path(__file__).resolve().parent.parent
TOML = '[job]\naction = "restore"\nimage = "golden"\ntarget = "internal"\ncountdown = 5\n'

NO_SERIAL = Disk(
    name="sda",
    path="/dev/sda",
    size=256_060_514_304,
    model="Generic SSD",
    transport="sata",
    by_path="/dev/disk/by-path/pci-0000:00:17.0-ata-1",
)
MACHINE = {"hostname": "live", "uuid": "4C4C4544-0042", "serial": "ABC123"}


def load(tmp_path: Path, data: bytes) -> u.JobSpec | None:
    (tmp_path / u.JOB_FILE).write_bytes(data)
    return u.load_job("", tmp_path)


# ---------------------------------------------------------------- the job file's encoding


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-8-sig", "utf-8"]
)
def test_notepad_encodings_are_decoded(tmp_path: Path, encoding: str) -> None:
    data = {
        "utf-16": TOML.encode("utf-16"),  # Notepad's "Unicode": little-endian with a BOM
        "utf-16-le-bom": codecs.BOM_UTF16_LE + TOML.encode("utf-16-le"),
        "utf-16-be-bom": codecs.BOM_UTF16_BE + TOML.encode("utf-16-be"),
        "utf-8-sig": TOML.encode("utf-8-sig"),
        "utf-8": TOML.encode(),
    }[encoding]
    job = load(tmp_path, data)
    assert job is not None and (job.image, job.countdown) == ("golden", 5)


@pytest.mark.parametrize(
    "data",
    [
        TOML.encode("utf-16-le"),  # UTF-16 without a BOM: cannot be told from garbage
        TOML.replace("golden", "gölden").encode("latin-1"),
        b"\xff\xfe" + b"\x00\xd8",  # a BOM, then a lone surrogate
    ],
    ids=["utf16-no-bom", "latin-1", "broken-utf16"],
)
def test_other_encodings_are_refused_in_one_line(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(u.UnattendedError) as err:
        load(tmp_path, data)
    message = str(err.value)
    assert "\n" not in message and "UTF-8" in message and u.JOB_FILE in message


def test_job_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / u.JOB_FILE).mkdir()
    with pytest.raises(u.UnattendedError, match="not a regular file"):
        u.load_job("", tmp_path)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "value", ["inf", "-inf", "nan", "-5", "1e300", "3601", "true", '"10s"', "2.5", "[]"]
)
def test_bad_countdowns_are_refused(value: str) -> None:
    text = TOML.replace("countdown = 5", f"countdown = {value}")
    with pytest.raises(u.UnattendedError, match="countdown") as err:
        u.job_from_toml(text, "bootmedia.toml")
    assert "\n" not in str(err.value)


def test_countdown_from_the_kernel_command_line() -> None:
    job = u.job_from_cmdline(
        "bootmedia.job=restore bootmedia.image=g bootmedia.target=internal bootmedia.countdown=30"
    )
    assert isinstance(job, u.JobSpec) and job.countdown == 30
    for bad in ("inf", "1e9", "-1", "99999999999"):
        with pytest.raises(u.UnattendedError, match="countdown"):
            u.job_from_cmdline(
                f"bootmedia.job=restore bootmedia.image=g "
                f"bootmedia.target=internal bootmedia.countdown={bad}"
            )


@pytest.mark.parametrize("rule", ["size:>=1.2.3G", "size:>=..G", "size:>=1e3G", "size:>=.5T"])
def test_malformed_size_rules_are_refused_when_read(rule: str) -> None:
    text = TOML.replace('target = "internal"', f'target = "{rule}"')
    with pytest.raises(u.UnattendedError, match="size rule"):
        u.job_from_toml(text, "bootmedia.toml")


def test_size_rules_are_exact_decimal() -> None:
    rule = u.parse_rule("size:>=256.06G")
    assert rule.conditions[0].limit == 256_060_000_000
    assert rule.matches(NO_SERIAL)
    assert not u.parse_rule("size:<=256.06G").matches(NO_SERIAL)
    assert u.parse_size("1.2T") == 1_200_000_000_000


# ---------------------------------------------------------------- results and the guard


def success_result(tmp_path: Path, spec: u.JobSpec, disk: Disk) -> Path:
    plan = u.UnattendedPlan(spec=spec, target=disk, repo=tmp_path / "repo", data_dir=tmp_path)
    return u.write_result(tmp_path, plan, u.JobResult("success", True, "ok", 1.0, 2.0), MACHINE)


@pytest.mark.parametrize(
    "content",
    [
        b"[1, 2, 3]",
        b'{"status": "success", "job": [], "target": "x", "machine": 7}',
        b'{"status": "success", "job": {"image": 5}}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe not json",
        b"",
    ],
    ids=["list", "wrong-types", "image-int", "deep", "binary", "empty"],
)
def test_results_of_the_wrong_shape_are_skipped(tmp_path: Path, content: bytes) -> None:
    spec = u.job_from_toml(TOML, "t")
    assert spec is not None
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "20990101-000000-bad.json").write_bytes(content)
    assert u.find_success(tmp_path, spec, NO_SERIAL, MACHINE) is None
    # ...and a real success next to it is still found.
    good = success_result(tmp_path, spec, NO_SERIAL)
    assert u.find_success(tmp_path, spec, NO_SERIAL, MACHINE) == good


def test_already_done_guard_works_for_a_disk_without_a_serial(tmp_path: Path) -> None:
    """Round 1 skipped the guard when the disk had no serial: a stick left in re-imaged the
    machine at every boot."""
    spec = u.job_from_toml(TOML, "t")
    assert spec is not None
    success_result(tmp_path, spec, NO_SERIAL)
    with pytest.raises(u.AlreadyDone):
        u.resolve_job(
            spec,
            [NO_SERIAL],
            data_dir=tmp_path,
            refusal=None,
            has_image=lambda p, n: p == tmp_path,
            machine=MACHINE,
        )
    # Another disk of the same model in another slot is another disk.
    other = dataclasses.replace(NO_SERIAL, by_path="/dev/disk/by-path/pci-0000:00:17.0-ata-2")
    assert u.disk_key(other) != u.disk_key(NO_SERIAL)
    plan = u.resolve_job(
        spec,
        [other],
        data_dir=tmp_path,
        refusal=None,
        has_image=lambda p, n: p == tmp_path,
        machine=MACHINE,
    )
    assert plan.target is other


def test_disk_key_prefers_stable_identities() -> None:
    assert u.disk_key(dataclasses.replace(NO_SERIAL, serial=" S1 ")) == "serial:S1"
    assert u.disk_key(dataclasses.replace(NO_SERIAL, wwn="0x5002538E")) == "wwn:5002538e"
    by_id = dataclasses.replace(NO_SERIAL, by_id=("/dev/disk/by-id/ata-Generic_SSD",))
    assert u.disk_key(by_id) == "by-id:ata-Generic_SSD"
    assert u.disk_key(NO_SERIAL) == "by-path:pci-0000:00:17.0-ata-1"
    bare = dataclasses.replace(NO_SERIAL, by_path="")
    assert u.disk_key(bare) == f"model:Generic SSD:{NO_SERIAL.size}"


# ---------------------------------------------------------------- the plan and the safety check


def test_plan_protocol(tmp_path: Path) -> None:
    spec = u.job_from_toml(TOML.replace("countdown = 5", "verify = false"), "t")
    assert spec is not None
    disk = dataclasses.replace(NO_SERIAL, serial="S5GX", by_id=("/dev/disk/by-id/ata-X_S5GX",))
    plan = u.resolve_job(
        spec,
        [disk],
        data_dir=tmp_path,
        refusal=None,
        has_image=lambda p, n: p == tmp_path,
        machine=MACHINE,
    )
    assert plan.summary()[2] == f"onto {disk.label()}"
    assert plan.command() == [
        "bootmedia",
        "apply",
        str(plan.repo),
        "golden",
        "/dev/disk/by-id/ata-X_S5GX",
        "--confirm",
        "S5GX",
        "--grow",
        "--no-verify",
    ]
    assert json.loads(json.dumps(plan.to_dict()))["target"]["key"] == "serial:S5GX"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.repo = Path("/")  # type: ignore[misc]


def test_default_refusal_has_no_import_escape_hatch() -> None:
    """No try/except ImportError around a safety check, in any module of the package."""
    for path in (ROOT / "bootmedia" / "unattended").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = ast.unparse(node.type)
                assert "ImportError" not in names, f"{path.name}: except {names}"
        assert "importlib" not in path.read_text(), path.name


def test_default_refusal_fails_closed_when_the_safety_module_is_broken(tmp_path: Path) -> None:
    """With bootmedia.disks unimportable, the unattended job cannot even load: it never runs
    with the safety check switched off (round 1 returned "writable")."""
    shadow = tmp_path / "shadow" / "bootmedia"
    shadow.mkdir(parents=True)
    code = (
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'bootmedia.disks.safety':\n"
        "            raise ImportError('simulated: safety module missing')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "try:\n"
        "    from bootmedia.unattended import default_refusal\n"
        "except ImportError as exc:\n"
        "    print('refused to load:', exc)\n"
        "    sys.exit(3)\n"
        "print('loaded without the safety check')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "simulated" in proc.stdout


def test_a_refused_disk_stops_the_job() -> None:
    spec = u.job_from_toml(TOML, "t")
    assert spec is not None
    with pytest.raises(u.UnattendedError, match="refused: in use"):
        u.resolve_job(spec, [NO_SERIAL], refusal=lambda d: "in use", has_image=lambda p, n: True)
