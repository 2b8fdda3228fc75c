#!/usr/bin/env bash
# Install everything, then run the whole test suite (root tests included when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -ra "$@"
