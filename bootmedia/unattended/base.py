"""What every part of the unattended job shares: where the stick's data lives, the job file's
name, the settings' allowed values, and the error type."""

from __future__ import annotations

from bootmedia.errors import BootmediaError
from bootmedia.stick.data import DATA_DIR, DATA_LABEL, RUN_DIR  # noqa: F401 (their one home)

LIVE_LABEL = "BOOTMEDIA_LIVE"  # the ISO9660 volume id of the live system itself
JOB_FILE = "bootmedia.toml"
RESULTS_DIR = "results"
MAX_JOB_FILE = 64 << 10
MAX_COUNTDOWN = 3600

ACTIONS = ("restore", "receive")  # receive: from a multicast session (bootmedia cast)
AFTER = ("poweroff", "reboot", "stay")
# Buses that never hold the machine's own disk.
EXTERNAL_TRANSPORTS = ("usb", "loop", "file", "nbd", "ieee1394")


class UnattendedError(BootmediaError):
    """The job cannot run as written: the message says why and what to change."""


class AlreadyDone(UnattendedError):
    """This machine's target already received this job (a reboot loop with the stick still in)."""
