"""The CLI imports only the command it runs (a recapture's time includes the start-up), and
still parses every command and global option as argparse would with all of them loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bootmedia import cli


def modules_loaded(*argv: str) -> set[str]:
    """The bootmedia.commands modules a fresh interpreter holds after parsing argv."""
    code = (
        "import sys\n"
        "from bootmedia import cli\n"
        f"cli.build_parser({list(argv)!r}).parse_args({list(argv)!r})\n"
        "print(' '.join(m for m in sys.modules if m.startswith('bootmedia.commands.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_a_command_imports_its_own_module_only() -> None:
    loaded = modules_loaded("capture", "/dev/null", "/tmp/repo", "--name", "x")
    assert "bootmedia.commands.capture" in loaded
    assert not loaded & {f"bootmedia.commands.{c}" for c in cli.COMMANDS if c != "capture"}
    # nor the http client, which only an http(s) repository needs
    code = "import sys, bootmedia.capture; print('urllib3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["capture", "d", "r", "--name", "n"], "capture"),
        (["make-usb", "live.iso", "/dev/sdz"], "make_usb"),
        (["-v", "--log-dir", "apply", "verify", "r", "i"], "verify"),  # a value, not the command
        (["--credentials=x.toml", "images", "r"], "images"),
        (["--log", "wipe", "info", "r", "i"], "info"),  # argparse's prefix of --log-dir
        (["--help"], None),
        (["nosuch"], None),
        ([], None),
    ],
)
def test_the_named_command_is_found_the_way_argparse_finds_it(
    argv: list[str], named: str | None
) -> None:
    assert cli._named_command(argv) == named
    if named:  # and the one module loaded parses argv as all of them would
        one = vars(cli.build_parser(argv).parse_args(argv))
        every = vars(cli.build_parser().parse_args(argv))
        assert {k: v for k, v in one.items() if k != "func"} == {
            k: v for k, v in every.items() if k != "func"
        }


def test_help_and_a_wrong_command_still_list_every_command() -> None:
    run = [sys.executable, "-m", "bootmedia"]
    out = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert name.replace("_", "-") in out
    bad = subprocess.run([*run, "nosuch"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "invalid choice: 'nosuch'" in bad.stderr and "make-usb" in bad.stderr
