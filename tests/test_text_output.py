"""Hostile text never reaches a terminal or the log raw (issue 8, item 16): escape sequences,
C0/C1 controls and bidi overrides in image descriptions, labels, disk models and serials are
stripped at every output edge; names are at most 128 characters; layout files are bounded
regular files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from bootmedia.disks.model import Disk, Partition
from bootmedia.repo.manifest import _canonical
from bootmedia.text import printable
from tests.minirepo import make_repo

ROOT = Path(__file__).resolve().parent.parent
EVIL = "ok\x1b[2J\x1b[H\x1b]0;pwned\x07\u202eevil\u202c\x9b31m\x00\r\nConfirm: type YES"
BAD = ("\x1b", "\x9b", "\u202e", "\u202c", "\x00", "\x07", "\r")


def bootmedia(*args: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BOOTMEDIA_LOG_DIR=str(log_dir))
    return subprocess.run(
        [sys.executable, "-m", "bootmedia", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def clean(text: object) -> bool:
    shown = str(text)  # a rich Text as the terminal gets it
    return not any(c in shown for c in BAD)


def test_printable_strips_sequences_controls_and_bidi() -> None:
    assert printable(EVIL) == "okevil31m Confirm: type YES"
    assert printable("Samsung SSD 870 EVO ✓ äöü") == "Samsung SSD 870 EVO ✓ äöü"
    assert printable("x" * 10_000, 128) == "x" * 125 + "..."  # console-safe (app/glyphs.py)
    assert printable("abcdef", 2) == "ab" and printable("abc", 3) == "abc"
    assert printable("\x1bP1$r\x1b\\tail") == "tail"  # a DCS string up to ST
    assert clean(printable("".join(chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000)))


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Path:
    """An image whose free-text fields carry escape sequences (re-signed: a forgery)."""
    root, _ = make_repo(tmp_path / "repo", "hostile")
    path = root / "images" / "hostile" / "manifest.json"
    env = json.loads(path.read_bytes())
    body = env["manifest"]
    body["description"] = EVIL
    body["source"].update(model=EVIL, serial=EVIL)
    body["areas"][1].update(label=EVIL, uuid=EVIL, fstype="\x1b[31mext4")
    env["blake3"] = blake3.blake3(_canonical(body)).hexdigest()
    path.write_text(json.dumps(env))
    return root


def test_a_cut_text_ends_in_glyphs_the_linux_console_draws() -> None:
    """TERM=linux: the console font has no U+2026; what a cut ends with must be in SAFE."""
    from app.glyphs import unsafe_glyphs

    cut = printable("Samsung SSD 870 EVO 1TB with a very long model name", 20)
    assert len(cut) == 20 and not unsafe_glyphs(cut), cut


def test_cli_and_log_show_no_control_characters(hostile_repo: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for args in (("images", str(hostile_repo)), ("info", str(hostile_repo), "hostile")):
        proc = bootmedia(*args, log_dir=logs)
        assert proc.returncode == 0, proc.stderr
        assert "evil" in proc.stdout, proc.stdout
        assert clean(proc.stdout) and clean(proc.stderr), repr(proc.stdout)
    info = bootmedia("info", str(hostile_repo), "hostile", log_dir=logs).stdout
    assert "Description: okevil31m Confirm: type YES" in info
    # The log records what ran, messages included, made printable too.
    proc = bootmedia("info", str(hostile_repo), EVIL.replace("\x00", ""), log_dir=logs)
    assert proc.returncode == 2 and clean(proc.stderr) and "Traceback" not in proc.stderr
    assert clean((logs / "bootmedia.log").read_text())


def test_disk_label_model_and_serial_are_printable() -> None:
    disk = Disk("sdz", "/dev/sdz", 500 * 10**9, model=EVIL, vendor="\x1b[1mACME", serial=EVIL)
    for text in (disk.label(), disk.title, disk.ident):
        assert clean(text), repr(text)
    assert "okevil" in disk.label()


def test_ten_thousand_character_names_give_one_line(hostile_repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "src.img"
    source.write_bytes(bytes(1 << 20))
    long = "a" * 10_000
    logs = tmp_path / "logs"
    for args in (
        ("capture", str(source), str(tmp_path / "new"), "--name", long),
        ("capture", str(source), str(tmp_path / "new"), "--name", "a" * 129),
        ("capture", str(source), str(tmp_path / "new"), "--name", "ok", "--description", long),
        ("info", str(hostile_repo), long),
        ("verify", str(hostile_repo), long),
        ("delete", str(hostile_repo), long),
    ):
        proc = bootmedia(*args, log_dir=logs)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (args[:2], proc.stderr[-500:])
        assert len(lines) == 1 and len(lines[0]) < 400, (args[:2], proc.stderr[:500])
        assert "internal error" not in proc.stderr
    assert not (tmp_path / "new").exists(), "a refused capture created the repository"
    ok = bootmedia(
        "capture",
        str(source),
        str(tmp_path / "new"),
        "--name",
        "a" * 128,
        "--dry-run",
        log_dir=logs,
    )
    assert "bad image name" not in ok.stderr


@pytest.mark.real_tools  # the target image file is read with sfdisk first
@pytest.mark.parametrize("layout", ["/dev/zero", "/dev/urandom", "fifo", "big"])
def test_layout_file_is_a_bounded_regular_file(tmp_path: Path, layout: str) -> None:
    target = tmp_path / "disk.img"
    target.write_bytes(bytes(64 << 20))
    if layout == "fifo":
        layout = str(tmp_path / "layout.toml")
        os.mkfifo(layout)
    elif layout == "big":
        layout = str(tmp_path / "big.toml")
        Path(layout).write_text("# " + "x" * (1 << 20) + "\n")
    start = time.monotonic()
    proc = bootmedia("partition", str(target), "--layout", layout, "--dry-run", log_dir=tmp_path)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "regular file" in proc.stderr or "too big" in proc.stderr


def test_tui_details_and_cells_show_no_control_characters(hostile_repo: Path) -> None:
    """The TUI's image and disk panes and the disk table's cells (the text the screens show)."""
    from app.engine import DiskRow, ImageRow
    from app.screens.pickers import disk_details, image_details
    from app.widgets.tables import DiskTable
    from bootmedia.repo.store import Repository

    with Repository.open(hostile_repo) as repo:
        m = repo.image("hostile")
    assert m.description == EVIL  # stored as captured; only the output is cleaned
    text = image_details(ImageRow(hostile_repo, m))
    assert clean(text) and "okevil" in text
    part = Partition("sdz1", "/dev/sdz1", 1, 10**9, fstype="\x1b[5mext4", label=EVIL)
    disk = Disk(
        "sdz",
        "/dev/sdz",
        500 * 10**9,
        model=EVIL,
        serial=EVIL,
        transport="sata",
        partitions=(part,),
    )
    row = DiskRow(disk)
    assert clean(disk_details(row))
    assert all(clean(v) for v in DiskTable.cells(row).values())
    assert clean(row.confirm_prompt) and "[b]" in row.confirm_prompt


def test_plural_says_one_and_many() -> None:
    from bootmedia.text import plural

    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert plural(1, "copy", "copies") == "1 copy" and plural(3, "copy", "copies") == "3 copies"


# "(s)" plurals left in shown text (none now: bootmedia/cast/sender.py's are folded).
_PLURAL_S_LEFT: set[str] = set()


def test_no_shown_text_says_s_in_brackets() -> None:
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted([*root.glob("bootmedia/**/*.py"), *root.glob("app/**/*.py")]):
        rel = str(path.relative_to(root))
        if rel in _PLURAL_S_LEFT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            # http(s) is a scheme, not a plural
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.search(r"[a-z]\(s\)", node.value.replace("http(s)", ""))
            ):
                found.append(f"{rel}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert not found, "\n".join(found)
