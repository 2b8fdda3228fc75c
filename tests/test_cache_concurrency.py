"""Jobs that open the same format-2 repository at once share one index cache file. Found by the
customize e2e on the live system: the home screen and the unattended job opened the stick's
repository together, both inserted the same pack into a fresh cache, the collision was taken
for damage, the cache was set aside under the other job, and both crashed ("attempt to write a
readonly database")."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bootmedia.repo.store import Repository
from tests.minirepo import make_repo_v2


def test_many_jobs_opening_one_repository_at_once_share_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BOOTMEDIA_CACHE_DIR", str(cache))
    root, _ = make_repo_v2(tmp_path / "repo")
    errors: list[BaseException] = []

    def job(gate: threading.Barrier) -> None:
        try:
            gate.wait()
            with Repository.open(root) as repo:
                m = repo.image("img")
                for area in m.areas:
                    for e in repo.extents(m, area.name):
                        assert e.is_zero or repo.locate(e.hash) is not None
        except BaseException as exc:
            errors.append(exc)

    for _ in range(15):
        for f in cache.glob("*"):
            f.unlink()  # a fresh cache each round: every job has packs to load
        gate = threading.Barrier(8)
        threads = [threading.Thread(target=job, args=(gate,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
    assert not list(cache.glob("*.damaged-*")), "contention was taken for damage"
