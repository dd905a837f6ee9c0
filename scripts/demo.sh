#!/usr/bin/env bash
# Install airgap into .venv and run its offline demo (no internet needed once installed, no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
make_venv
echo "==> pip install ."
.venv/bin/python -m pip install -q .
exec .venv/bin/airgap demo "$@"
