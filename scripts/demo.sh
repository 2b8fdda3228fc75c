#!/usr/bin/env bash
# Install everything, then start the TUI on a demo lab of file-backed virtual disks.
# Real disks are never shown in demo mode.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
exec .venv/bin/bootmedia tui --demo "$@"
