#!/usr/bin/env bash
# Install every test dependency (apt packages included) and run the whole suite: lint, format, types, then pytest.
# CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

# scripts/test-apt-packages.txt says which test needs each package.
# shellcheck disable=SC2046
apt_install $(sed -e 's/#.*//' scripts/test-apt-packages.txt | tr -s ' \n' ' ')
make_venv
echo "==> pip install -e .[test]"
.venv/bin/python -m pip install -q -e '.[test]'

echo "==> ruff check"
.venv/bin/ruff check airgap tests benchmarks
echo "==> ruff format --check"
.venv/bin/ruff format --check airgap tests benchmarks
echo "==> mypy"
.venv/bin/python -m mypy

echo "==> pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
