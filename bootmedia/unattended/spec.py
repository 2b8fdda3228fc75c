"""An unattended job as written: bootmedia.toml on the stick's data partition, or bootmedia.*
parameters on the kernel command line. Parsed and checked whole before any countdown."""

from __future__ import annotations

import codecs
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia.customize.unattended import CMDLINE_KEYS as CUSTOMIZE_CMDLINE_KEYS
from bootmedia.customize.unattended import CustomizeSpec
from bootmedia.errors import BootmediaError
from bootmedia.text import printable
from bootmedia.unattended.base import (
    ACTIONS,
    AFTER,
    JOB_FILE,
    MAX_COUNTDOWN,
    MAX_JOB_FILE,
    UnattendedError,
)
from bootmedia.unattended.rules import parse_rule

# ---------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobSpec:
    """An unattended job as written, before any disk is chosen."""

    action: str
    image: str
    target: str
    after: str = "stay"
    repo: str = ""  # relative to the data partition, or absolute; "" = search it
    verify: bool = True
    countdown: int = 10
    grow: bool = True
    source: str = ""  # where it came from, for messages: "kernel command line", a file path
    customize: CustomizeSpec | None = None  # [job.customize]: see bootmedia/customize/unattended.py
    rdv: str = ""  # receive: the session's multicast rendezvous ("" = bootmedia cast's default)
    interface: str = ""  # receive: the network interface ("" = udpcast's choice)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> JobSpec:
        known = {
            "action",
            "image",
            "target",
            "after",
            "repo",
            "verify",
            "countdown",
            "grow",
            "customize",
            "rdv",
            "interface",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            word = "setting" if len(unknown) == 1 else "settings"
            raise UnattendedError(f"{source}: unknown {word} {', '.join(unknown)}")
        action = str(data.get("action", "")).strip().lower()
        if action not in ACTIONS:
            raise UnattendedError(
                f"{source}: job {action or '(none)'!r} is not an unattended job "
                f"(choose one of: {', '.join(ACTIONS)})"
            )
        image = str(data.get("image", "")).strip()
        if not image:
            raise UnattendedError(f"{source}: a {action} job needs an image name")
        target = str(data.get("target", "")).strip()
        parse_rule(target, source)  # fail now, before any countdown
        after = str(data.get("after", "stay")).strip().lower()
        if after not in AFTER:
            raise UnattendedError(f"{source}: after={after!r}: choose one of {', '.join(AFTER)}")
        verify = _flag(data.get("verify", True))
        grow = _flag(data.get("grow", True))
        countdown = _countdown(data.get("countdown", 10), source)
        customize = None
        if "customize" in data:
            try:
                customize = CustomizeSpec.from_dict(data["customize"], source)
            except BootmediaError as exc:
                raise UnattendedError(str(exc)) from None
            if not verify:
                raise UnattendedError(f"{source}: customize runs after a verified restore only")
        return cls(
            action=action,
            image=image,
            target=target,
            after=after,
            repo=str(data.get("repo", "")).strip(),
            verify=verify,
            countdown=countdown,
            grow=grow,
            source=source,
            customize=customize,
            rdv=str(data.get("rdv", "")).strip(),
            interface=str(data.get("interface", "")).strip(),
        )

    def describe(self) -> str:
        verify = "verify" if self.verify else "no verification"
        return (
            f"{self.action} {self.image} onto the disk matching {self.target!r}, {verify}, "
            f"then {self.after}"
        )


def _countdown(value: object, source: str) -> int:
    """Whole seconds, 0..MAX_COUNTDOWN: an integer in TOML, digits on the command line. inf,
    nan, 1e300, -5, true and "10s" are refused (round 1 crashed on inf)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,6}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnattendedError(
            f"{source}: countdown must be a whole number of seconds (0 to {MAX_COUNTDOWN}), "
            f"not {printable(repr(value), 40)}"
        )
    if not 0 <= value <= MAX_COUNTDOWN:
        raise UnattendedError(
            f"{source}: countdown must be between 0 and {MAX_COUNTDOWN} seconds, not {value}"
        )
    return value


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "no", "false", "off")
    return bool(value)


def parse_cmdline(text: str) -> dict[str, str]:
    """The bootmedia.* parameters of a kernel command line, without the prefix.

    Quoted values work the way the kernel passes them: "bootmedia.target=model:Samsung SSD*".
    """
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    params: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.startswith("bootmedia."):
            params[key.removeprefix("bootmedia.")] = value
    return params


def job_from_cmdline(text: str) -> JobSpec | bool | None:
    """The job the kernel command line names; None if it names none; False for job=off."""
    params = parse_cmdline(text)
    job = params.get("job", "").strip().lower()
    if not job:
        return None
    if job in ("off", "none", "0", "no"):
        return False
    data: dict[str, Any] = {"action": job}
    for key in (
        "image",
        "target",
        "after",
        "repo",
        "verify",
        "countdown",
        "grow",
        "rdv",
        "interface",
    ):
        if key in params:
            data[key] = params[key]
    custom = {k: params[k] for k in CUSTOMIZE_CMDLINE_KEYS if k in params}
    if custom:
        data["customize"] = custom
    return JobSpec.from_dict(data, "kernel command line")


def job_from_toml(text: str, source: str) -> JobSpec | None:
    """The job in a bootmedia.toml; None when the file has no job in it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UnattendedError(f"{source}: not valid TOML: {exc}") from None
    job = data.get("job", data)
    if not isinstance(job, dict) or not job:
        return None
    if "action" not in job and not set(job) & {"image", "target"}:
        return None
    return JobSpec.from_dict(job, source)


def decode_job_file(data: bytes, source: str) -> str:
    """A bootmedia.toml's text. Notepad saves UTF-16 with a byte-order mark, or UTF-8 with one:
    both are decoded; anything else that is not UTF-8 is refused with one line."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                raise UnattendedError(
                    f"{source}: damaged {codec.upper()} text; save it again as UTF-8"
                ) from None
    if b"\x00" in data:  # UTF-16 without a byte-order mark: NUL between the letters
        raise UnattendedError(
            f"{source}: not UTF-8 text (it holds NUL bytes: UTF-16 without a byte-order mark?); "
            "save it as UTF-8 (Notepad: Save as, Encoding UTF-8)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnattendedError(
            f"{source}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as "
            "UTF-8 (Notepad: Save as, Encoding UTF-8)"
        ) from None


def read_job_file(path: Path) -> bytes | None:
    """The job file's bytes (None when there is none): a regular file of bounded size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnattendedError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnattendedError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_JOB_FILE + 1)
        except OSError as exc:
            raise UnattendedError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_JOB_FILE:
        raise UnattendedError(f"{path}: too big for a job file (at most {MAX_JOB_FILE} bytes)")
    return data


def load_job(cmdline: str, data_dir: Path | None) -> JobSpec | None:
    """The command line's job, else the data partition's bootmedia.toml, else None."""
    from_cmdline = job_from_cmdline(cmdline)
    if from_cmdline is False:
        return None
    if isinstance(from_cmdline, JobSpec):
        return from_cmdline
    if data_dir is None:
        return None
    path = data_dir / JOB_FILE
    data = read_job_file(path)
    if data is None:
        return None
    return job_from_toml(decode_job_file(data, str(path)), str(path))
