"""Apply's read-back (issue 8: success means the written bytes were read back and checked).

A target that stores something other than what was written, one byte, is caught by the
read-back after the write, both through O_DIRECT (the default where the target allows it) and
through buffered reads (where it does not); the job fails naming the area and offset, and says
what the target is left as. The bad byte is put on the target right after apply's own write of
that run, as a disk with a bad sector would hold it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.apply import job as apply_job
from bootmedia.capture import capture_image, plan_capture
from bootmedia.errors import BootmediaError
from bootmedia.lab import SamplePart
from tests.disktools import is_direct

MiB = 1 << 20
pytestmark = pytest.mark.real_tools  # sfdisk, mkfs.ext4 and blkid on image files
LAYOUT = (SamplePart(1, "ext4", 24), SamplePart(2, "ext4", 0))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    source = lab.make_file(root / "source.img", 64 * MiB)
    lab.populate_sample_file(source, layout=LAYOUT, fill=0.3)
    capture_image(plan_capture(str(source), root / "repo", "img"))
    return root / "repo"


def _lying_writes(monkeypatch: pytest.MonkeyPatch, nth: int) -> list[int]:
    """The nth data run apply writes lands with one byte flipped; returns where."""
    real = apply_job._Target.write_group
    seen: list[int] = []
    flipped: list[int] = []

    def write_group(self, group, datas):
        real(self, group, datas)
        data = [(i, d) for i, d in zip(group, datas, strict=True) if d is not None]
        if not data:
            return
        seen.append(1)
        if len(seen) == nth:
            item, block = data[len(data) // 2]
            pos = item.base + item.extent.offset + len(block) // 3
            byte = os.pread(self.fd, 1, pos)
            os.pwrite(self.fd, bytes([byte[0] ^ 0x40]), pos)
            flipped.append(pos)

    monkeypatch.setattr(apply_job._Target, "write_group", write_group)
    return flipped


def _record_direct_opens(monkeypatch: pytest.MonkeyPatch, allow: bool) -> list[bool]:
    """Whether each read-back got an O_DIRECT reader; allow=False refuses it (buffered)."""
    opened: list[bool] = []
    real_open = apply_job._DirectReader.open

    def open_reader(path: str, size: int):
        reader = real_open(path, size) if allow else None
        opened.append(reader is not None)
        return reader

    monkeypatch.setattr(apply_job._DirectReader, "open", staticmethod(open_reader))
    return opened


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
def test_a_byte_the_target_did_not_keep_fails_the_job(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    target = tmp_path / "target.img"
    lab.make_file(target, 64 * MiB)
    opened = _record_direct_opens(monkeypatch, allow=direct)
    flipped = _lying_writes(monkeypatch, nth=3)
    plan = plan_apply(repo, "img", str(target))
    with pytest.raises(BootmediaError) as err:
        apply_image(plan)
    assert flipped, "the test never flipped a byte"
    msg = str(err.value)
    assert "verification failed" in msg and "does not read back as written" in msg
    assert "marked incomplete (BOOTMEDIA-INCOMPLETE)" in msg
    assert opened and all(o == direct for o in opened)


def test_a_target_that_keeps_every_byte_passes_through_o_direct(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "target.img"
    lab.make_file(target, 64 * MiB)
    opened = _record_direct_opens(monkeypatch, allow=True)
    result = apply_image(plan_apply(repo, "img", str(target)))
    assert result.verified
    assert opened and all(opened)  # the read-back really went through O_DIRECT here


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """(through O_DIRECT, bytes) of every data run apply writes."""
    writes: list[tuple[bool, int]] = []
    real = apply_job._pwritev_all

    def pwritev_all(fd, bufs, pos):
        direct = is_direct(fd)
        writes.append((direct, sum(len(b) for b in bufs)))
        return real(fd, bufs, pos)

    monkeypatch.setattr(apply_job, "_pwritev_all", pwritev_all)
    return writes


def test_the_data_goes_to_the_target_through_o_direct(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoded frames are written from their aligned buffers with O_DIRECT (no copy into
    the page cache), and the restore reads back as the source."""
    target = tmp_path / "target.img"
    lab.make_file(target, 64 * MiB)
    writes = _record_writes(monkeypatch)
    result = apply_image(plan_apply(repo, "img", str(target)))
    assert result.verified
    direct = sum(n for d, n in writes if d)
    assert writes and direct >= 0.9 * sum(n for _, n in writes), writes[:10]
    source = repo.parent / "source.img"
    assert _sha(source, 24 * MiB) == _sha(target, 24 * MiB)


def test_a_target_refusing_o_direct_writes_is_written_buffered(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the target's filesystem turns O_DIRECT writes down with EINVAL (as older tmpfs
    and some FUSE filesystems do; this machine's kernel takes them everywhere, so the refusal
    is made here), the write is redone buffered, the rest follows buffered, and it verifies."""
    target = tmp_path / "target.img"
    lab.make_file(target, 64 * MiB)
    writes = _record_writes(monkeypatch)
    recording = apply_job._pwritev_all
    refused: list[int] = []

    def refusing(fd, bufs, pos):
        if is_direct(fd):
            refused.append(pos)
            raise OSError(22, "Invalid argument")
        return recording(fd, bufs, pos)

    monkeypatch.setattr(apply_job, "_pwritev_all", refusing)
    result = apply_image(plan_apply(repo, "img", str(target)))
    assert result.verified
    assert len(refused) == 1  # asked once, then buffered for the rest
    assert writes and not any(d for d, _ in writes)
    assert _sha(repo.parent / "source.img", 24 * MiB) == _sha(target, 24 * MiB)


def _sha(path: Path, n: int) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()
