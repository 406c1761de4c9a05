#!/usr/bin/env bash
# mypy --strict over the installed layout: shm/, workers/ and viewer/ are rt_eda.shm,
# rt_eda.workers and rt_eda.viewer, which a plain `mypy shm` cannot know. Build that tree
# from symlinks in a scratch folder and check the package there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/rt_eda"
for f in "$root"/rt_eda/*; do ln -s "$f" "$tree/rt_eda/"; done
for pkg in shm workers viewer; do ln -s "$root/$pkg" "$tree/rt_eda/$pkg"; done
cd "$tree"
python -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p rt_eda "$@"
