"""http:// repositories: images, info, verify and apply from a real nginx in a namespace, and
from a hostile server that drops, 404s, truncates and lies: a clear error or a retry, never a
wrong byte on the disk."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import cast

import pytest
import zstandard

from bootmedia import lab
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.errors import ImageError
from bootmedia.net.http import HttpStorage
from bootmedia.repo.storage import MissingFile, StorageError
from bootmedia.repo.store import Repository
from tests import sample
from tests.net.conftest import bootmedia_cmd, cli, cli_env
from tests.net.hostile import Misbehaviour, hostile_server, listing_dirs
from tests.net.netns import Netns
from tests.net.servers import Nginx

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def test_images_info_verify_apply_from_nginx(
    netns: Netns, nginx: Nginx, golden, loopdev, tmp_path: Path
) -> None:
    _, layout, want = golden
    url = nginx.url("repo")
    listed = cli(netns, tmp_path, "images", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)["images"]] == ["golden"]
    info = cli(netns, tmp_path, "info", url, "golden")
    assert info.returncode == 0 and "golden" in info.stdout, info.stderr
    ok = cli(netns, tmp_path, "verify", url, "golden")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dst = loopdev(128 * MiB)
    dry = cli(netns, tmp_path, "apply", url, "golden", dst, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"Command: bootmedia apply {url} golden" in dry.stdout  # the URL, not a mount point
    restored = cli(netns, tmp_path, "apply", url, "golden", dst, "--confirm", Path(dst).name, "-q")
    assert restored.returncode == 0, restored.stderr
    assert "verified" in restored.stdout
    lab.run(["partx", "-u", dst], check=False)
    assert sample.sums(dst, layout) == want
    # Chunks came as Range requests (206) over reused connections.
    lines = [ln.split() for ln in nginx.access_log.read_text().splitlines()]
    ranged = [ln for ln in lines if "/packs/" in ln[3] and ln[4] == "206"]
    assert len(ranged) > 20
    connections = {ln[0] for ln in ranged}
    assert len(connections) < len(ranged) / 4, "connections should be kept alive and reused"
    assert max(int(ln[1]) for ln in ranged) > 5
    # Read-only: capture and delete say so in one line, and the server's files are unchanged.
    before = sorted(p.name for p in (nginx.root / "repo" / "packs").iterdir())
    refused = cli(netns, tmp_path, "delete", url, "golden")
    assert refused.returncode != 0 and "read-only" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    # a capture's plan is refused too, not shown as if the capture could run
    planned = cli(netns, tmp_path, "capture", dst, url, "--name", "new", "--dry-run")
    assert planned.returncode != 0 and "read-only" in planned.stderr, (
        planned.stdout + planned.stderr
    )
    assert sorted(p.name for p in (nginx.root / "repo" / "packs").iterdir()) == before


def test_apply_from_nginx_on_a_machine_that_never_saw_the_repository(
    netns: Netns, nginx: Nginx, golden, loopdev, tmp_path: Path
) -> None:
    """A netbooted live system has no index cache of the repository: apply, the first and only
    command, must fill it from the packs' .idx files over HTTP (it used to look the chunks up
    in the empty cache and call every one missing)."""
    _, layout, want = golden
    url = nginx.url("repo")
    dst = loopdev(128 * MiB)
    cache = tmp_path / "fresh-cache"
    proc = subprocess.run(
        bootmedia_cmd(netns, "apply", url, "golden", dst, "--confirm", Path(dst).name, "-q"),
        capture_output=True, text=True, env=cli_env(tmp_path, BOOTMEDIA_CACHE_DIR=str(cache)),
        cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout
    lab.run(["partx", "-u", dst], check=False)
    assert sample.sums(dst, layout) == want
    got = [ln.split() for ln in nginx.access_log.read_text().splitlines()]
    assert any(ln[3].endswith(".idx") and ln[2] == "GET" and ln[4] == "200" for ln in got), got
    assert list(cache.glob("*.sqlite"))


def test_a_missing_repository_or_image_over_http_is_one_line(
    netns: Netns, nginx: Nginx, golden, tmp_path: Path
) -> None:
    for args, says in (
        (("images", nginx.url("nothing-here")), "not a bootmedia repository"),
        (("info", nginx.url("repo"), "nope"), "no image 'nope'"),
    ):
        proc = cli(netns, tmp_path, *args)
        assert proc.returncode != 0
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    unreachable = cli(netns, tmp_path, "images", "http://127.0.0.1:1/repo")
    assert unreachable.returncode != 0 and "cannot connect" in unreachable.stderr


def test_storage_retries_drops_and_truncation_then_refuses(
    netns: Netns, golden, served: Path
) -> None:
    root = served / "repo"
    pack = next((root / "packs").glob("pack-*.bmp"))
    rel = f"packs/{pack.name}"
    data = pack.read_bytes()
    for mode in ("drop", "truncate", "500", "shortrange", "shiftrange", "shortlength"):
        bad = Misbehaviour(mode, times=2)
        with hostile_server(netns, root, bad) as base, netns.entered():
            st = HttpStorage(base)
            assert st.pread(rel, 1000, 300_000) == data[1000:301_000]
            assert st.retried == 2, mode
            st.close()
    for mode, says in (
        ("drop", "cut short"),
        ("truncate", "cut short"),
        ("norange", "ignores Range"),
        ("shortrange", "short range"),
        ("shiftrange", "wrong Content-Range"),
        ("shortlength", "short range"),
    ):
        with hostile_server(netns, root, Misbehaviour(mode)) as base, netns.entered():
            st = HttpStorage(base, attempts=3)
            with pytest.raises(StorageError) as err:
                st.pread(rel, 1000, 300_000)
            assert says in str(err.value)
            st.close()
    # A redirect elsewhere is not followed (nothing is sent to another address) nor retried.
    bad = Misbehaviour("redirect")
    with hostile_server(netns, root, bad) as base, netns.entered():
        st = HttpStorage(base)
        with pytest.raises(StorageError) as err:
            st.pread(rel, 0, 10)
        assert "redirects to http://10.99.99.99/packs/" in str(err.value), err.value
        assert st.retried == 0 and st.requests == 1 and bad.done == 1
        st.close()
    with hostile_server(netns, root, Misbehaviour("404")) as base, netns.entered():
        st = HttpStorage(base)
        with pytest.raises(MissingFile):
            st.pread(rel, 0, 10)
        assert st.retried == 0, "a 404 is not retried"
        assert (
            st.pread("bootmedia-repo.json", 0, 1 << 20)
            == (root / "bootmedia-repo.json").read_bytes()
        )
        assert st.pread("bootmedia-repo.json", 1 << 20, 10) == b""  # past the end: like pread
        with pytest.raises(StorageError):
            st.pread("../etc/passwd", 0, 10)
        st.close()


@pytest.mark.parametrize(
    ("mode", "times", "says"),
    [
        ("drop", -1, "cut short"),
        ("404", -1, "missing"),
        ("truncate", -1, "cut short"),
        ("flip", -1, "damaged"),
        ("shortrange", -1, "short range"),
        ("shiftrange", -1, "wrong Content-Range"),
        ("shortlength", -1, "short range"),
        ("redirect", -1, "redirects to http://10.99.99.99/"),
    ],
)
def test_restore_from_a_hostile_server_fails_clearly_and_writes_no_wrong_byte(
    netns: Netns, golden, served: Path, loopdev, tmp_path: Path, mode: str, times: int, says: str
) -> None:
    root = served / "repo"
    listing_dirs(root)
    dst = loopdev(128 * MiB)
    bad = Misbehaviour(mode, times, min_len=4096)  # the index builds; chunk reads fail
    with hostile_server(netns, root, bad) as base:
        proc = cli(netns, tmp_path, "apply", base, "golden", dst, "--confirm", Path(dst).name, "-q")
    assert proc.returncode != 0, proc.stdout
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "restored" not in proc.stdout
    # The target says it is incomplete: nothing on it can pass for the image.
    assert sample.read(dst, 0, len(INCOMPLETE_MARKER)) == INCOMPLETE_MARKER


def test_restore_through_a_flaky_server_retries_and_verifies(
    netns: Netns, golden, served: Path, loopdev, tmp_path: Path
) -> None:
    _, layout, want = golden
    root = served / "repo"
    listing_dirs(root)
    dst = loopdev(128 * MiB)
    bad = Misbehaviour("drop", times=6, min_len=4096)
    with hostile_server(netns, root, bad) as base:
        proc = cli(netns, tmp_path, "apply", base, "golden", dst, "--confirm", Path(dst).name, "-q")
    assert proc.returncode == 0, proc.stderr
    assert bad.done == 6
    lab.run(["partx", "-u", dst], check=False)
    assert sample.sums(dst, layout) == want


def test_flipped_bytes_are_caught_by_the_chunk_names(netns: Netns, golden, served: Path) -> None:
    from bootmedia.net.http_repo import HttpRepository, HttpRepository2

    root = served / "repo"
    listing_dirs(root)
    with hostile_server(netns, root, Misbehaviour("flip", min_len=4096)) as base, netns.entered():
        st = HttpStorage(base)
        config = json.loads((root / "bootmedia-repo.json").read_text())
        # Seen as a Repository (the two share its API): HttpRepository2 borrows some of
        # HttpRepository's methods, which mypy cannot check on an HttpRepository2.
        repo = cast(
            Repository,
            HttpRepository2(served, st, config)
            if config["version"] == 2
            else HttpRepository(served, st, config),
        )
        m = repo.image("golden")
        big = [
            (e, loc)
            for a in m.areas
            if a.map
            for e in repo.extents(m, a.name)
            if not e.is_zero and (loc := repo.locate(e.hash)) and loc.stored_len > 8192
        ]
        assert big
        e, loc = big[0]
        with pytest.raises(ImageError):
            repo.read_block(loc, e.hash, zstandard.ZstdDecompressor())
        repo.close()
