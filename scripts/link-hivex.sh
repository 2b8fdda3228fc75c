#!/usr/bin/env bash
# Link Debian's python3-hivex bindings (hivex/ and libhivexmod*.so) into a venv's site-packages.
# Why: no maintained PyPI package can WRITE registry hives, and a --system-site-packages venv
# would see every Debian Python module. The bindings are built for Debian's CPython; the venv's
# Python must have the same version (checked below), which holds on Debian 12 (3.11) and in the
# live system (Debian's own python3).
# Usage: scripts/link-hivex.sh VENV_PYTHON
set -euo pipefail
py=${1:?usage: link-hivex.sh VENV_PYTHON}
src=/usr/lib/python3/dist-packages
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tag=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
mod="$src/libhivexmod$tag"
if [ ! -e "$mod" ] || [ ! -d "$src/hivex" ]; then
    echo "link-hivex: $mod or $src/hivex missing (apt-get install python3-hivex; the venv's Python must match Debian's)" >&2
    exit 1
fi
ln -sfn "$src/hivex" "$site/hivex"
ln -sfn "$mod" "$site/$(basename "$mod")"
"$py" -c 'import hivex' || { echo "link-hivex: import hivex failed in $py" >&2; exit 1; }
