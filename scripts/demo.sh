#!/usr/bin/env bash
# Try bootmedia safely: install everything, then run the TUI on a lab of virtual disks
# (small files under ~/.cache/bootmedia/demo-lab). Real disks are never shown. As root the files
# are attached as loop devices; as any other user they are used as plain image files (installing
# the packages still asks for sudo).
#   ./scripts/demo.sh            # reuse the lab from last time
#   ./scripts/demo.sh --reset    # build it again from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
# Install only when something changed since the last install (pyproject.toml, deps.sh), and
# keep pip's and apt's output in a log: the UI comes up on a clean screen.
stamp=.venv/.demo-installed
log=.venv/demo-install.log
if [ ! -x .venv/bin/bootmedia ] || [ ! -e "$stamp" ] \
    || [ pyproject.toml -nt "$stamp" ] || [ scripts/deps.sh -nt "$stamp" ]; then
    echo "bootmedia demo: installing the tools and the Python environment (log: $log)..."
    mkdir -p .venv
    if ! ./scripts/deps.sh >"$log.tmp" 2>&1; then
        tail -n 30 "$log.tmp" >&2
        echo "bootmedia demo: the install failed; the whole output is in $log" >&2
        mv "$log.tmp" "$log"
        exit 1
    fi
    mv "$log.tmp" "$log"
    touch "$stamp"
fi
exec .venv/bin/bootmedia tui --demo "$@"
