"""Paths inside a repository. Names come from files an attacker may have written (manifests,
the index), so none is joined to the repository's directory unchecked: nothing is read or
written outside it, whatever a name or a symlink in the repository says."""

from __future__ import annotations

import re
from pathlib import Path

from bootmedia.errors import ImageError

# A plain file name: no "/", no "..", not hidden, not empty.
_PLAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_+-]|\.(?!\.)){0,254}\Z")


def is_plain_name(name: str) -> bool:
    return bool(_PLAIN.match(name))


def inside(root: Path, *names: str) -> Path:
    """root/names..., each a plain name, and still under root once symlinks are resolved."""
    for name in names:
        if not is_plain_name(name):
            raise ImageError(f"{root}: refusing the path {'/'.join(names)!r} (not a plain name)")
    path = root.joinpath(*names)
    base = root.resolve()
    real = path.resolve()
    if real != base and not real.is_relative_to(base):
        raise ImageError(f"{path}: refused: it leads outside the repository (to {real})")
    return path
