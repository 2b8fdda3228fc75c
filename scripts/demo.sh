#!/usr/bin/env bash
# Try bootmedia safely: install everything, then run the TUI on a lab of virtual disks
# (small files under ~/.cache/bootmedia/demo-lab). Real disks are never shown. As root the files
# are attached as loop devices; as any other user they are used as plain image files (installing
# the packages still asks for sudo).
#   ./scripts/demo.sh            # reuse the lab from last time
#   ./scripts/demo.sh --reset    # build it again from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
exec .venv/bin/bootmedia tui --demo "$@"
