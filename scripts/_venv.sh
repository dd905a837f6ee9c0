# Shared by demo.sh and test.sh: make .venv with the machine's python3, installing what a fresh
# Debian/Ubuntu lacks for that (python3-venv) through apt-get.
set -eu

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*  (run as root or install sudo)" >&2; exit 2; fi
}

apt_install() {
  # Only touch apt when something is missing: a re-run on a prepared machine stays fast and offline.
  missing=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
  done
  [ -z "$missing" ] && return 0
  echo "==> apt-get install$missing"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

make_venv() {
  if ! command -v python3 >/dev/null; then apt_install python3; fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv python3-pip; fi
  if [ ! -x .venv/bin/python ]; then
    echo "==> python3 -m venv .venv"
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
}
