"""What docs/LIVE.md gives a PXE site is what is built and booted: the iPXE script in the docs is
build_iso.sh's byte for byte, the wrapper is the one tests/e2e/test_net.py boots, and dnsmasq
accepts the dnsmasq file (`dnsmasq --test`: its syntax only; no test boots it, docs/LIVE.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e import test_net

ROOT = Path(__file__).resolve().parents[2]
LIVE = (ROOT / "docs" / "LIVE.md").read_text()


def _block_after(marker: str) -> str:
    """The first fenced block after marker in docs/LIVE.md."""
    start = LIVE.index("```\n", LIVE.index(marker)) + 4
    return LIVE[start : LIVE.index("```", start)]


def test_the_documented_ipxe_script_is_the_built_one() -> None:
    script = (ROOT / "build_iso.sh").read_text()
    built = re.search(r"<<'IPXE'\n(.*?)^IPXE$", script, re.S | re.M)
    assert built is not None
    assert _block_after("`bootmedia.ipxe` (as built):") == built[1]


def test_the_documented_wrapper_is_what_the_netboot_e2e_boots() -> None:
    documented = _block_after("A wrapper script\nsets both and chains it:").splitlines()
    booted = test_net.BOOT_IPXE.splitlines()
    assert [ln.split()[:2] for ln in documented] == [ln.split()[:2] for ln in booted]
    assert documented[-1] == booted[-1] == "chain ${base}/bootmedia.ipxe"
    # The documented unattended job is the one the PXE e2e boots: the same parameters, with
    # the repository on that test's server (and a shorter countdown).
    args = dict(a.split("=", 1) for a in documented[2].split()[2:])
    booted_args = dict(a.split("=", 1) for a in test_net.JOB_ARGS.split())
    assert booted_args.pop("bootmedia.repo").startswith("http://")
    assert args.pop("bootmedia.repo").startswith("http://")
    assert booted_args.pop("bootmedia.countdown") == "5"
    assert args == booted_args


@pytest.mark.real_tools
def test_dnsmasq_accepts_the_documented_file(tmp_path: Path) -> None:
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (dnsmasq-base)")
    conf = tmp_path / "bootmedia.conf"
    conf.write_text(_block_after("### dnsmasq on an existing network"))
    assert "dhcp-boot=tag:ipxe,http://" in conf.read_text()
    ok = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True)
    assert ok.returncode == 0 and "syntax check OK" in ok.stderr, ok.stderr
    # And it does check: a misspelt option is refused.
    conf.write_text(conf.read_text().replace("dhcp-range=", "dhcp-rnage="))
    bad = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True)
    assert bad.returncode != 0 and "bad option" in bad.stderr, bad.stderr
