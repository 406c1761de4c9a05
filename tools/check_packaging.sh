#!/usr/bin/env bash
# Packaging checks; each fails when its fault comes back:
#  1. deptry: every third-party module that rt_eda/, shm/, workers/ or viewer/ imports is a
#     declared dependency (not merely another package's dependency), every declared one is
#     used, test tools stay out of the package; and everything tests/, bench/ and tools/
#     import is declared in [project] or the test extras.
#  2. tools/check_wheel.py: the built wheel holds every source module and data file at its
#     installed path and nothing else (plus check-wheel-contents on the same tree).
# Usage: tools/check_packaging.sh [WHEEL]
# Without WHEEL it builds one offline (sdist, then the wheel from the sdist, with the build
# backend of the test extras: python -m build --no-isolation), so it needs no network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
status=0

echo "== deptry: imports of the package (rt_eda/ shm/ workers/ viewer/)"
python -m deptry --no-ansi rt_eda shm workers viewer 2>&1 || status=1

echo "== deptry: imports of tests/ bench/ tools/ (declared in [project] or [test])"
python -m deptry --no-ansi tests bench tools --exclude '.*/__pycache__/' \
    --ignore DEP002,DEP004 2>&1 || status=1

wheel=${1:-}
if [ -z "$wheel" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "== build: sdist and wheel (no isolation) into $tmp"
    if ! python -m build --no-isolation --outdir "$tmp" . >"$tmp/build.log" 2>&1; then
        tail -n 40 "$tmp/build.log"
        echo "check_packaging: the wheel could not be built"
        exit 1
    fi
    wheel=$(echo "$tmp"/*.whl)
fi

echo "== wheel contents: $wheel"
python tools/check_wheel.py "$wheel" || status=1

if [ "$status" -ne 0 ]; then
    echo "check_packaging: FAILED (see above)"
fi
exit "$status"
