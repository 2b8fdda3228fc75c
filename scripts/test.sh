#!/usr/bin/env bash
# Install everything, then run the whole test suite (root tests included when run as root).
#
#   ./scripts/test.sh                      the full suite (what CI runs), see below
#   ./scripts/test.sh tests/test_x.py -x   one pytest session with these arguments, as before
#
# The full suite runs as two pytest sessions at the same time: the VM tests (tests/e2e: the ISO
# build, then qemu under TCG, long waits for a guest to boot) and everything else. One after the
# other they took 48 minutes on a busy 2-core CI machine; side by side, the rest runs in the VM
# tests' waits. They share nothing that could collide: loop devices come from `losetup --find`,
# network namespaces carry the session's pid, each session has its own tmp_path directories
# (tmp_path_retention_policy stays "failed", which locks them), and tests/e2e works under
# build/e2e. The rest streams here; tests/e2e's output goes to build/e2e/pytest.log and is
# printed in full once both have finished. The exit status is non-zero if either session failed.
# (No tee for the rest: a process a test leaks keeps a pipe open, and tee would wait for it.)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ $# -gt 0 ]; then
    exec python -m pytest -ra "$@"
fi

mkdir -p build/e2e
e2e_log=build/e2e/pytest.log
# No cache provider in the second session: two sessions would write .pytest_cache at once.
python -m pytest -ra -p no:cacheprovider tests/e2e >"$e2e_log" 2>&1 &
e2e_pid=$!
# If this script is stopped (Ctrl-C, a CI timeout), the VM tests stop with it.
trap 'kill "$e2e_pid" 2>/dev/null || true' EXIT
echo "scripts/test.sh: tests/e2e runs beside this session (pid $e2e_pid, output in $e2e_log)"

rest=0
python -m pytest -ra --ignore=tests/e2e || rest=$?
e2e=0
wait "$e2e_pid" || e2e=$?
trap - EXIT

echo
echo "scripts/test.sh: everything but tests/e2e exited $rest (above); tests/e2e exited $e2e (below)"
echo "=============== tests/e2e (ran beside the rest; $e2e_log) ==============="
cat "$e2e_log"
if [ "$rest" -ne 0 ]; then
    exit "$rest"
fi
exit "$e2e"
