#!/usr/bin/env bash
# The long fuzz run of the repository readers (tests/test_fuzz_readers.py): N examples per
# reader (default 20000), nice'd, with hypothesis statistics. CI runs the same tests with 150.
#   scripts/fuzz.sh [N] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
shift || true
export PATH="$PWD/.venv/bin:$PATH"
FUZZ_EXAMPLES=$n exec nice -n 15 python -m pytest -q -p no:cacheprovider --timeout 0 \
    --hypothesis-show-statistics tests/test_fuzz_readers.py "$@"
