"""Issue 8 item 8: every name a GPT can hold (36 UTF-16 units: quotes, backslashes, commas,
non-ASCII, characters outside the BMP, newlines) survives capture and apply on a real loop
device, and nothing in a name or an attribute can reach the sfdisk script unescaped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.errors import ImageError
from bootmedia.repo.manifest import Table, TablePartition
from bootmedia.table import check_names, render_sfdisk
from bootmedia.tools import gpt, sfdisk

MiB = 1 << 20
NAMES = [
    'say "hello"',
    "back\\slash\\",
    "comma, and key=value",
    "Ünïcödé Ωμέγα 日本語",
    "two\nlines\tand a tab",
    "😀 outside the BMP 🚀",
    "x" * 36,  # exactly what an entry holds
    "😀" * 18,  # 36 UTF-16 units in 18 characters
    'end\\"',  # a backslash before a quote: the old script ended the field here
]


def names_of(dev: str) -> dict[int, str]:
    out = subprocess.run(["sfdisk", "-J", dev], capture_output=True, check=True).stdout
    parts = json.loads(out)["partitiontable"]["partitions"]
    return {sfdisk.partition_number(p["node"]): p.get("name", "") for p in parts}


@pytest.mark.root
def test_every_gpt_name_round_trips_through_capture_and_apply(loopdev) -> None:
    src = loopdev(64 * MiB)
    script = "label: gpt\n" + "".join("size=2MiB\n" for _ in NAMES)
    subprocess.run(["sfdisk", "-q", src], input=script.encode(), check=True)
    want = {i: name for i, name in enumerate(NAMES, 1)}
    gpt.set_names(src, want, 512)
    lab.rescan(src)
    assert names_of(src) == want  # sfdisk reads back what the GPT holds
    repo = Path(src.replace("/dev/", "/tmp/bm-names-"))
    try:
        capture_image(plan_capture(src, repo, "names"))
        dst = loopdev(64 * MiB)
        plan = plan_apply(repo, "names", dst)
        assert plan.table is not None
        assert {p.number: p.name for p in plan.table.partitions} == want
        result = apply_image(plan)
        assert result.verified
        assert names_of(dst) == want
    finally:
        subprocess.run(["rm", "-rf", str(repo)], check=True)


def table(*parts: TablePartition) -> Table:
    return Table("gpt", "", 512, 34, 131038, parts)


def part(**kw: object) -> TablePartition:
    base = {
        "number": 1,
        "start": 2048,
        "size": 2048,
        "type": "0FC63DAF-8483-4772-8E79-3D69ED7D8E47",
    }
    return TablePartition(**{**base, **kw})  # type: ignore[arg-type]


def test_names_are_escaped_in_the_script() -> None:
    script = render_sfdisk(table(part(name='a "quoted"\nname\\')))
    line = script.splitlines()[-1]
    assert line.endswith('name="a \\x22quoted\\x22\\x0aname\\x5c"')
    assert script.count("\n") == 5  # the newline in the name did not make a line


def test_a_name_sfdisk_cannot_write_is_left_to_the_gpt_writer() -> None:
    assert "name=" not in render_sfdisk(table(part(name="😀")))


@pytest.mark.parametrize(
    "field", [{"attrs": 'x"\nlabel: dos'}, {"type": "83\nsize=1"}, {"uuid": "abc, start=0"}]
)
def test_hostile_fields_never_reach_the_script(field: dict[str, str]) -> None:
    with pytest.raises(ImageError, match="not a valid value"):
        render_sfdisk(table(part(**field)))


def test_a_name_longer_than_an_entry_is_refused() -> None:
    check_names(table(part(name="y" * 36)))
    with pytest.raises(ImageError, match="37 UTF-16 units"):
        check_names(table(part(name="y" * 37)))
    with pytest.raises(ImageError, match="38 UTF-16 units"):
        check_names(table(part(name="😀" * 19)))
