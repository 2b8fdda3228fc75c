"""Hostile repositories (issue 8, items 1, 5, 13, 14): an image's identity is its directory; a
manifest of the wrong shape, type, size or depth, or one whose paths lead outside the repository,
makes that one image damaged. It is refused with one line, nothing is changed, and every other
image still lists, verifies and restores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard

from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.errors import ImageError
from bootmedia.repo.manifest import _canonical
from bootmedia.repo.store import Repository
from bootmedia.verify import verify_repo
from tests import sample
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = [root_only, pytest.mark.root]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (symlinks as their target) with its content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def two_images(tmp_path_factory) -> tuple[Path, tuple[Any, ...]]:
    """A repository with images 'first' and 'second' of a real disk (captured once)."""
    from bootmedia import lab

    tmp = tmp_path_factory.mktemp("hostile")
    src = lab.attach(lab.make_file(tmp / "src.img", 128 * MiB), 512, False)
    try:
        layout = sample.build(src, "gpt")
        repo = tmp / "repo"
        capture_image(plan_capture(src, repo, "first"))
        capture_image(plan_capture(src, repo, "second"))
        sums = sample.sums(src, layout)
    finally:
        lab.detach(src)
    return repo, (layout, sums)


@pytest.fixture
def repo(two_images, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(two_images[0], copy, symlinks=True)
    return copy


def rewrite(image_dir: Path, mutate: Callable[[dict[str, Any]], Any]) -> None:
    """Change a manifest's body and give it a valid checksum again: a deliberate forgery, not
    bit rot, so only the reader's own checks can catch it."""
    path = image_dir / "manifest.json"
    envelope = json.loads(path.read_bytes())
    body = mutate(envelope["manifest"])
    if body is None:
        body = envelope["manifest"]
    envelope["manifest"] = body
    envelope["blake3"] = blake3.blake3(_canonical(body)).hexdigest()
    path.write_text(json.dumps(envelope))


def clone(repo: Path, name: str, rename: bool = True) -> Path:
    """cp -a images/first images/NAME; with rename, the manifest is re-signed with NAME."""
    d = repo / "images" / name
    shutil.copytree(repo / "images" / "first", d)
    if rename:
        rewrite(d, lambda m: m.update(name=name))
    return d


def one_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_delete_of_a_copied_directory_deletes_nothing(repo: Path) -> None:
    """Item 1: after cp -a images/second images/second-copy, `delete second-copy` deleted
    `second` (it looked the image up again by the name inside the manifest)."""
    shutil.copytree(repo / "images" / "second", repo / "images" / "second-copy")
    before = tree_digest(repo / "images")
    proc = sample.bootmedia("delete", str(repo), "second-copy")
    assert proc.returncode == 4, proc
    line = one_line(proc)
    assert "second-copy" in line and "names it 'second'" in line
    assert tree_digest(repo / "images") == before, "the refused delete changed the repository"

    listing = sample.bootmedia("images", str(repo), "--json")
    out = json.loads(listing.stdout)
    assert [i["name"] for i in out["images"]] == ["first", "second"]
    assert any("second-copy" in u and "damaged" in u for u in out["unreadable"])
    for args in (("info", str(repo), "second-copy"), ("verify", str(repo), "second-copy")):
        assert sample.bootmedia(*args).returncode == 4
    assert verify_repo(repo, "second").ok
    # The image's directory is what delete removes: deleting 'second' leaves the copy alone.
    assert sample.bootmedia("delete", str(repo), "second").returncode == 0
    assert (repo / "images" / "second-copy").is_dir()
    assert not (repo / "images" / "second").exists()


def _forge_deep(d: Path) -> None:
    (d / "manifest.json").write_bytes(
        b'{"format":"bootmedia-image","version":1,"blake3":"","manifest":'
        + b"[" * 200_000
        + b"]" * 200_000
        + b"}"
    )


def _forge_huge(d: Path) -> None:
    # A valid manifest whose description is 100 MB: read, parsed and listed by round 1.
    rewrite(d, lambda m: m.update(description="x" * (100 * MiB)))


HOSTILE: dict[str, Callable[[Path], object]] = {
    "body-is-a-list": lambda d: rewrite(d, lambda m: [m]),
    "envelope-is-a-list": lambda d: (d / "manifest.json").write_text("[1, 2, 3]"),
    "deep": _forge_deep,
    "huge": _forge_huge,
    "version-true": lambda d: (d / "manifest.json").write_text(
        (d / "manifest.json").read_text().replace('"version": 1', '"version": true')
    ),
    "version-2": lambda d: (d / "manifest.json").write_text(
        (d / "manifest.json").read_text().replace('"version": 1', '"version": 2')
    ),
    "size-is-a-string": lambda d: rewrite(d, lambda m: m["source"].update(size="128M")),
    "negative-offset": lambda d: rewrite(d, lambda m: m["areas"][1].update(offset=-4096)),
    "unknown-mode": lambda d: rewrite(d, lambda m: m["areas"][1].update(mode="sparse")),
    "map-dotdot": lambda d: rewrite(d, lambda m: m["areas"][1].update(map="../first/p1.map")),
    "map-absolute": lambda d: rewrite(d, lambda m: m["areas"][1].update(map="/etc/passwd")),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_manifest_is_one_damaged_image(repo: Path, two_images, loopdev, kind) -> None:
    """Items 5, 13, 14: each of these listed, crashed or read outside the image in round 1."""
    name = f"bad-{kind}"
    d = clone(repo, name)
    HOSTILE[kind](d)
    before = tree_digest(repo)

    with Repository.open(repo) as r:
        good, bad = r.scan_images()
        assert [m.name for m in good] == ["first", "second"]
        assert len(bad) == 1 and bad[0].startswith(f"image {name}:"), bad
        assert "\n" not in bad[0] and len(bad[0]) < 400, bad[0]
        with pytest.raises(ImageError):
            r.image(name)
    if kind.startswith("version"):
        word = "true" if kind == "version-true" else "2"
        assert "version" in bad[0] and word in bad[0].lower(), bad[0]
    if kind == "unknown-mode":
        assert "'sparse'" in bad[0] and "p1" in bad[0], bad[0]
    if kind.startswith("map"):
        assert "map" in bad[0], bad[0]

    for args in (("info", str(repo), name), ("verify", str(repo), name)):
        proc = sample.bootmedia(*args)
        assert proc.returncode == 4, (args, proc)
        assert name in one_line(proc)
    listing = sample.bootmedia("images", str(repo))
    assert listing.returncode == 0 and "Traceback" not in listing.stderr
    assert "first" in listing.stdout and "second" in listing.stdout
    assert name not in listing.stdout and name in listing.stderr

    result = verify_repo(repo)
    assert {d.image for d in result.damaged} == {name}, result.damaged
    assert verify_repo(repo, "second").ok

    dst = loopdev(128 * MiB)
    proc = sample.bootmedia("apply", str(repo), name, dst, "--confirm", Path(dst).name, "-q")
    assert proc.returncode == 4 and name in one_line(proc)
    assert sample.read(dst, 0, 1 * MiB) == bytes(1 * MiB), "a refused apply wrote to the target"
    assert tree_digest(repo) == before, "reading a hostile image changed the repository"

    layout, sums = two_images[1]
    apply_image(plan_apply(repo, "second", dst))
    assert sample.sums(dst, layout) == sums, "the good image next to the bad one must restore"


def _outside_file(tmp_path: Path, content: bytes) -> Path:
    """A file outside the repository, with an access time that any read would move."""
    path = tmp_path / "outside" / "secret"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (0, path.stat().st_mtime))
    return path


def test_symlinked_image_directory_outside_is_never_read(repo: Path, tmp_path: Path) -> None:
    """Item 14: images/evil -> a directory outside the repository."""
    outside = tmp_path / "elsewhere"
    shutil.copytree(repo / "images" / "first", outside)
    rewrite(outside, lambda m: m.update(name="evil"))
    os.utime(outside / "manifest.json", (0, (outside / "manifest.json").stat().st_mtime))
    (repo / "images" / "evil").symlink_to(outside)
    before = tree_digest(repo)
    with Repository.open(repo) as r:
        good, bad = r.scan_images()
    assert [m.name for m in good] == ["first", "second"]
    assert len(bad) == 1 and "outside the repository" in bad[0], bad
    proc = sample.bootmedia("delete", str(repo), "evil")
    assert proc.returncode == 4 and "outside the repository" in one_line(proc)
    assert tree_digest(repo) == before and (outside / "manifest.json").is_file()
    assert (outside / "manifest.json").stat().st_atime == 0, "the outside manifest was read"


def test_symlinked_map_outside_is_never_read(repo: Path, tmp_path: Path, loopdev) -> None:
    """Item 14: a map that is a symlink to a file outside the repository."""
    d = clone(repo, "linked")
    secret = _outside_file(tmp_path, (d / "p1.map").read_bytes())
    (d / "p1.map").unlink()
    (d / "p1.map").symlink_to(secret)
    before = tree_digest(repo)
    result = verify_repo(repo)
    assert {x.image for x in result.damaged} == {"linked"}, result.damaged
    assert any("p1.map" in x.reason for x in result.damaged)
    dst = loopdev(128 * MiB)
    proc = sample.bootmedia("apply", str(repo), "linked", dst, "--confirm", Path(dst).name, "-q")
    assert proc.returncode == 4 and "p1.map" in one_line(proc)
    assert sample.read(dst, 0, 1 * MiB) == bytes(1 * MiB)
    assert secret.stat().st_atime == 0, "the map outside the repository was read"
    assert tree_digest(repo) == before


def test_index_naming_a_pack_outside_is_refused(repo: Path, tmp_path: Path) -> None:
    """Item 14: the index is a cache anyone can edit; a pack name with .. is never opened."""
    import sqlite3

    secret = _outside_file(tmp_path, b"x" * 4096)
    with Repository.open(repo) as r:  # format 2: the index cache lives on this machine
        cache = r.cache.path
    assert cache is not None
    db = sqlite3.connect(cache)
    rel = os.path.relpath(secret, repo / "packs")
    db.execute("UPDATE packs SET name=?", (rel,))
    db.commit()
    db.close()
    # The cache is checked against the .idx files when the repository opens: the forged rows
    # name no pack there, so they are dropped and the real packs indexed again.
    result = verify_repo(repo)
    assert result.ok
    assert secret.stat().st_atime == 0, "a pack outside the repository was read"
    # and a location naming a path outside is refused by the storage itself
    with Repository.open(repo) as r:
        loc = r.locate(next(e.hash for e in r.extents(r.image("first"), "p1") if not e.is_zero))
        assert loc is not None
        with pytest.raises(ImageError, match="outside the repository"):
            r.read_frame(loc._replace(pack=rel), zstandard.ZstdDecompressor())
    assert secret.stat().st_atime == 0
