"""The customize part of an unattended job: `[job.customize]` in bootmedia.toml, or
`bootmedia.hostname=...` & co. on the kernel command line.

    [job.customize]
    hostname = "lab-{n:03}"      # or names_csv = "names.csv": serial or MAC -> name
    new_machine_id = true        # default
    new_ssh_keys = false
    boot_entry = true            # UEFI NVRAM entry for the restored disk, first in BootOrder
    add_fallback = false         # \\EFI\\BOOT\\BOOTX64.EFI where missing
    hooks = ["hooks/10-inventory.sh"]   # and/or hooks_dir = "hooks"

Relative paths are looked up on the stick's data partition first, then in the repository; a
path that is in neither is refused before the restore starts. {n} counts in the repository's
counters/ (shared by every stick and netboot client that uses it). An unattended job is a mass
deploy by nature, so a Windows image that was not generalized is warned about in the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bootmedia.customize.hooks import hooks_in
from bootmedia.customize.job import CustomizeResult, customize_disk
from bootmedia.customize.names import counter_dir_for, make_rule
from bootmedia.customize.plan import CustomizeOptions, plan_customize, precheck
from bootmedia.errors import UsageError
from bootmedia.progress import Reporter

log = logging.getLogger("bootmedia.customize")

_BOOL_KEYS = ("new_machine_id", "new_ssh_keys", "boot_entry", "add_fallback")
_STR_KEYS = ("hostname", "names_csv", "prefix", "hooks_dir")
KEYS = (*_STR_KEYS, *_BOOL_KEYS, "hooks")
CMDLINE_KEYS = ("hostname", "names_csv", "prefix", *_BOOL_KEYS)


def _flag(value: object, key: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "yes", "true", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "no", "false", "off"):
        return False
    raise UsageError(f"{source}: customize {key} must be true or false, not {value!r}")


@dataclass(frozen=True)
class CustomizeSpec:
    hostname: str = ""
    names_csv: str = ""
    prefix: str = ""
    new_machine_id: bool = True
    new_ssh_keys: bool = False
    boot_entry: bool = False
    add_fallback: bool = False
    hooks: tuple[str, ...] = ()
    hooks_dir: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> CustomizeSpec:
        if not isinstance(data, Mapping):
            raise UsageError(f"{source}: [job.customize] must be a table")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            word = "setting" if len(unknown) == 1 else "settings"
            raise UsageError(f"{source}: unknown customize {word} {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key in _STR_KEYS:
            if key in data:
                if not isinstance(data[key], str):
                    raise UsageError(f"{source}: customize {key} must be a string")
                values[key] = data[key].strip()
        for key in _BOOL_KEYS:
            if key in data:
                values[key] = _flag(data[key], key, source)
        hooks = data.get("hooks", [])
        if isinstance(hooks, str):
            hooks = [hooks]
        if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
            raise UsageError(f"{source}: customize hooks must be a list of paths")
        values["hooks"] = tuple(h.strip() for h in hooks if h.strip())
        spec = cls(**values)
        if spec.hostname and spec.names_csv:
            raise UsageError(f"{source}: customize takes hostname or names_csv, not both")
        # A pattern is checked now, before any countdown: make_rule parses it.
        if spec.hostname:
            make_rule(spec.hostname, None, spec.prefix, "/" if "{n" in spec.hostname else None)
        return spec

    @classmethod
    def from_cmdline(cls, params: Mapping[str, str]) -> CustomizeSpec | None:
        data = {k: params[k] for k in CMDLINE_KEYS if k in params}
        return cls.from_dict(data, "kernel command line") if data else None

    def describe(self) -> str:
        name = (
            f"name {self.hostname!r}"
            if self.hostname
            else (f"name from {self.names_csv}" if self.names_csv else "name kept")
        )
        parts = [name]
        if self.new_machine_id:
            parts.append("new machine-id")
        if self.new_ssh_keys:
            parts.append("new SSH keys")
        if self.boot_entry:
            parts.append("UEFI boot entry")
        if self.add_fallback:
            parts.append("fallback loader")
        if self.hooks or self.hooks_dir:
            parts.append("hooks")
        return "Then customize: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hooks"] = list(self.hooks)
        return d

    def options(self, *, repo: Path, data_dir: Path | None, image: str) -> CustomizeOptions:
        """Engine options, with every relative path found (stick first, then repository)."""
        csv = self._find(self.names_csv, repo, data_dir, "names_csv") if self.names_csv else None
        counter = counter_dir_for(self.hostname, repo) if "{n" in self.hostname else None
        rule = make_rule(self.hostname or None, csv, self.prefix, counter)
        hooks = [self._find(h, repo, data_dir, "hook") for h in self.hooks]
        if self.hooks_dir:
            hooks += hooks_in(self._find(self.hooks_dir, repo, data_dir, "hooks_dir"))
        return CustomizeOptions(
            rule=rule,
            reset_machine_id=self.new_machine_id,
            remove_ssh_keys=self.new_ssh_keys,
            boot_entry=self.boot_entry,
            add_fallback=self.add_fallback,
            hooks=tuple(hooks),
            machines=2,  # an unattended job deploys many machines
            image=image,
        )

    @staticmethod
    def _find(rel: str, repo: Path, data_dir: Path | None, what: str) -> str:
        path = Path(rel)
        if path.is_absolute():
            candidates = [path]
        else:
            candidates = [d / path for d in (data_dir, repo) if d is not None]
        for c in candidates:
            if c.exists():
                return str(c)
        where = " or ".join(str(c) for c in candidates)
        raise UsageError(f"customize {what} {rel}: not found ({where})")


def prepare_customize(
    spec: CustomizeSpec, repo: Path, data_dir: Path | None, manifest: Any
) -> CustomizeOptions:
    """Options for this job, checked against the image before the restore writes anything."""
    options = spec.options(repo=repo, data_dir=data_dir, image=str(manifest.name))
    precheck({a.fstype for a in manifest.areas if a.fstype}, options)
    return options


def run_customize(options: CustomizeOptions, target: str, reporter: Reporter) -> CustomizeResult:
    plan = plan_customize(target, options)
    for line in plan.summary():
        log.info("customize plan: %s", line)
    return customize_disk(plan, reporter)
