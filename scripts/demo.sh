#!/usr/bin/env bash
# Try bootmedia safely: install everything, then run the TUI on a lab of virtual disks
# (loop devices backed by small files under ~/.cache/bootmedia/demo-lab). Real disks are never
# shown. Needs root for the loop devices; asks for sudo when not root.
#   ./scripts/demo.sh            # reuse the lab from last time
#   ./scripts/demo.sh --reset    # build it again from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
exec $SUDO env "PATH=$PATH" .venv/bin/bootmedia tui --demo "$@"
