"""Naming rules (fixed, patterns, CSV), each OS's refusals, the {n} counter under concurrent
deploys, and the efibootmgr parser on recorded real outputs. No root needed."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from bootmedia.customize import efi
from bootmedia.customize.names import (
    Machine,
    NameRule,
    claim_counter,
    lookup_csv,
    make_rule,
    name_problem,
    peek_counter,
    read_machine,
    render,
)
from bootmedia.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "efibootmgr"
M = Machine(serial="CZC1234XYZ", macs=("52:54:00:ab:cd:ef", "52:54:00:00:00:02"), asset="A-77")


@pytest.mark.parametrize(
    ("name", "kind", "problem"),
    [
        ("lab-07", "linux", None),
        ("web01.example.org", "linux", None),
        ("LAB-07", "windows", None),
        ("ACCOUNTING-PC15", "windows", None),  # exactly 15
        ("ACCOUNTING-PC-16", "windows", "at most 15"),  # never truncated
        ("pc_7", "windows", "may not have: '_'"),
        ("pc 7", "windows", "may not have: ' '"),
        ("pc.lab", "windows", "may not have: '.'"),
        ("12345", "windows", "only digits"),
        ("-pc", "windows", "starts or ends with '-'"),
        ("pc_7", "linux", "RFC 1123"),
        ("-web", "linux", "RFC 1123"),
        ("web-", "linux", "RFC 1123"),
        ("a..b", "linux", "RFC 1123"),
        ("ünïcode", "linux", "RFC 1123"),
        ("x" * 63, "linux", None),
        ("x" * 64, "linux", "RFC 1123"),  # one label holds 63 at most
        ("a" * 30 + "." + "b" * 33, "linux", None),
        ("a" * 32 + "." + "b" * 32, "linux", "at most 64"),
        ("", "linux", "empty"),
    ],
)
def test_name_rules(name: str, kind: str, problem: str | None) -> None:
    got = name_problem(name, kind)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def rule_of(pattern: str | None = None, **kw: Any) -> NameRule:
    rule = make_rule(pattern, **kw)
    assert rule is not None  # None only for no pattern at all
    return rule


def test_patterns(tmp_path: Path) -> None:
    assert render(rule_of("pc-{serial}"), M, None) == "pc-CZC1234XYZ"
    assert render(rule_of("pc-{mac}"), M, None) == "pc-525400abcdef"
    assert render(rule_of("{prefix}-{asset}", prefix="ops"), M, None) == "ops-A-77"
    rule = make_rule("lab-{n:03}", counter_dir=tmp_path)
    assert rule is not None and rule.uses_counter
    assert render(rule, M, 7) == "lab-007"
    assert make_rule("fixed-name") == make_rule("fixed-name")
    assert make_rule(None) is None


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("pc-{hostname}", "unknown field {hostname}"),
        ("pc-{serial", "bad name pattern"),
        ("lab-{n}", "needs a counter directory"),
    ],
)
def test_bad_patterns(pattern: str, error: str) -> None:
    with pytest.raises(UsageError, match=error):
        make_rule(pattern)


def test_pattern_needs_a_field_the_machine_has() -> None:
    with pytest.raises(UsageError, match=r"needs \{serial\}, which this machine does not have"):
        render(rule_of("pc-{serial}"), Machine(macs=("52:54:00:00:00:01",)), None)


def test_csv(tmp_path: Path) -> None:
    csv = tmp_path / "names.csv"
    csv.write_text(
        "serial,name\n# the lab\nCZC1234XYZ,lab-alpha\n52-54-00-00-00-09,lab-beta\n\n"
        "SN-2,lab-gamma\n"
    )
    assert lookup_csv(csv, M) == "lab-alpha"
    assert lookup_csv(csv, Machine(macs=("52:54:00:00:00:09",))) == "lab-beta"
    assert render(rule_of(names_csv=str(csv)), Machine(serial="sn-2"), None) == "lab-gamma"
    with pytest.raises(UsageError, match=r"no row for this machine \(serial NOPE"):
        lookup_csv(csv, Machine(serial="NOPE", macs=("52:54:00:00:00:01",)))
    dup = tmp_path / "dup.csv"
    dup.write_text("A1,one\nB2,two\na1,three\n")
    with pytest.raises(UsageError, match=r"'a1' maps to two names \(rows 1 and 3\)"):
        lookup_csv(dup, Machine(serial="A1"))
    bad = tmp_path / "bad.csv"
    bad.write_text("A1\n")
    with pytest.raises(UsageError, match="row 1: expected"):
        lookup_csv(bad, Machine(serial="A1"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(UsageError, match="cannot read the names CSV"):
        lookup_csv(binary, M)
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(17 << 20)
    with pytest.raises(UsageError, match="larger than 16 MiB"):
        lookup_csv(huge, M)
    with pytest.raises(UsageError, match="no such names CSV"):
        make_rule(names_csv=str(tmp_path / "missing.csv"))
    with pytest.raises(UsageError, match="not both"):
        make_rule("x", names_csv=str(csv))


def test_read_machine_from_sysfs_files(tmp_path: Path) -> None:
    dmi, net = tmp_path / "dmi", tmp_path / "net"
    dmi.mkdir()
    (dmi / "product_serial").write_text("VMW-42\n")
    (dmi / "chassis_asset_tag").write_text("To Be Filled By O.E.M.\n")
    for name, mac, physical in (
        ("lo", "00:00:00:00:00:00", False),
        ("br0", "02:00:00:00:00:01", False),
        ("enp1s0", "52:54:00:AA:BB:CC", True),
    ):
        d = net / name
        d.mkdir(parents=True)
        (d / "address").write_text(mac + "\n")
        if physical:
            (d / "device").mkdir()
    m = read_machine(dmi, net)
    assert m.serial == "VMW-42"
    assert m.asset == ""  # a vendor placeholder is no asset tag
    assert m.macs == ("52:54:00:aa:bb:cc", "02:00:00:00:00:01")


def test_counter_reuses_a_machines_claim(tmp_path: Path) -> None:
    a, b = Machine(serial="A"), Machine(serial="B")
    assert peek_counter(tmp_path / "c", a) == 1
    assert claim_counter(tmp_path / "c", a) == 1
    assert claim_counter(tmp_path / "c", b) == 2
    assert claim_counter(tmp_path / "c", a) == 1  # restored again: same number
    assert peek_counter(tmp_path / "c", Machine(serial="C")) == 3
    assert "machine=B\n" in (tmp_path / "c" / "000002.claim").read_text()


def _claim_many(args: tuple[str, int, int, threading.Barrier]) -> list[int]:
    directory, worker, count, barrier = args
    barrier.wait()
    return [
        claim_counter(directory, Machine(serial=f"W{worker}-{i}"), job=f"deploy-{worker}")
        for i in range(count)
    ]


def test_counter_under_concurrent_deploys(tmp_path: Path) -> None:
    """Eight processes, started together, claim 25 numbers each: 200 distinct numbers, no gap."""
    workers, each = 8, 25
    # spawn, not fork: pytest has threads by now (a leaked one holding a lock at the fork left
    # two workers deadlocked on a futex in a full-suite run, and the test timed out after 600 s)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ctx.Pool(workers) as pool:
            results = pool.map(
                _claim_many, [(str(tmp_path / "n"), w, each, barrier) for w in range(workers)]
            )
    claimed = [n for r in results for n in r]
    assert len(claimed) == workers * each
    assert sorted(claimed) == list(range(1, workers * each + 1))
    files = sorted(p.name for p in (tmp_path / "n").iterdir())
    assert len(files) == workers * each and files[0] == "000001.claim"
    owners = {(tmp_path / "n" / f).read_text().split("\n")[0] for f in files}
    assert len(owners) == workers * each  # each number names exactly one machine


def test_counter_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot make the counter directory"):
        claim_counter(tmp_path / "file" / "n", M)


# ---- efibootmgr -------------------------------------------------------------------------------


def test_parse_efibootmgr_17() -> None:
    state = efi.parse_efibootmgr((FIXTURES / "lenovo-v17-v.txt").read_text())
    assert state.current == "0001"
    assert state.order[:3] == ("0001", "0000", "0010")
    debian = state.entry("0001")
    assert debian is not None and debian.active and debian.label == "debian"
    assert debian.partuuid == "bf78d357-3eb2-433b-9ecf-08dd40d8761f"
    assert debian.loader == "\\EFI\\debian\\shimx64.efi"
    win = state.entry("0000")
    assert win is not None and win.loader == "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
    setup = state.entry("0010")
    assert setup is not None and not setup.active and setup.partuuid == "" and setup.loader == ""
    loader = efi.Loader("EFI/debian/shimx64.efi", "debian")
    assert [e.number for e in efi.matching(state, debian.partuuid.upper(), loader)] == ["0001"]


def test_parse_efibootmgr_18() -> None:
    state = efi.parse_efibootmgr((FIXTURES / "v18-u.txt").read_text())
    assert state.order[0] == "0006"
    uos = state.entry("0006")
    assert uos is not None and uos.partuuid == "82f3e1c8-8654-4797-a584-90f373331323"
    assert uos.loader.startswith("\\EFI\\BOOT\\vmlinuz")
    assert state.entry("0001") is not None and not state.entry("0001").active  # type: ignore[union-attr]
    assert len(state.entries) == 7


def test_parse_efibootmgr_without_bootorder() -> None:
    state = efi.parse_efibootmgr((FIXTURES / "no-bootorder.txt").read_text())
    assert state.order == () and state.entries == ()


def test_loaders_found_on_an_esp_listing() -> None:
    files = ["EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi", "EFI/debian/shimx64.efi"]
    loader = efi.find_loader(files)
    assert loader is not None and loader.efi_path == "\\EFI\\debian\\shimx64.efi"
    assert loader.label == "debian" and efi.has_fallback(files)
    win = efi.find_loader(["EFI/Microsoft/Boot/bootmgfw.efi", "EFI/ubuntu/shimx64.efi"])
    assert win is not None and win.label == "Windows Boot Manager"
    assert efi.find_loader(["EFI/BOOT/BOOTX64.EFI"]) is None  # the fallback is not an OS loader
    assert not efi.has_fallback(["EFI/debian/grubx64.efi"])


def test_parse_efibootmgr_recorded_under_ovmf() -> None:
    """Recorded inside the e2e VM by a hook, right after bootmedia created the entry."""
    state = efi.parse_efibootmgr((FIXTURES / "ovmf-after-customize.txt").read_text())
    assert state.current == "0001"
    assert state.order[0] == "0005"
    debian = state.entry("0005")
    assert debian is not None and debian.label == "debian" and debian.active
    assert debian.partuuid == "5b207fac-9cb0-1a4a-ab3a-2f1613695000"
    assert debian.loader == "\\EFI\\debian\\grubx64.efi"
    dvd = state.entry("0001")
    assert dvd is not None and dvd.label == "UEFI QEMU DVD-ROM QM00001"
    assert dvd.partuuid == "" and dvd.loader == ""
    loader = efi.Loader("EFI/debian/grubx64.efi", "debian")
    assert efi.matching(state, debian.partuuid, loader) == [debian]


def test_apply_refuses_customize_where_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from bootmedia.cli import main
    from bootmedia.commands.customize import add_options, options_from_args

    argv = ["apply", str(tmp_path), "golden", "/dev/null", "--partitions", "2", "--hostname", "x"]
    assert main(argv) == 2
    assert "whole-disk restore, not --partitions" in capsys.readouterr().err
    p = argparse.ArgumentParser()
    add_options(p)
    args = p.parse_args(["--hostname", "lab-{n}"])
    with pytest.raises(UsageError, match="read-only: give --counter-dir"):
        options_from_args(args, repo="https://images.example/repo")
    opts = options_from_args(args, repo=tmp_path)
    assert opts.rule is not None and opts.rule.counter_dir == str(tmp_path / "counters" / "lab-_n_")
