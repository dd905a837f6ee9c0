"""install.sh: the bundle's bootstrap, so that `sudo sh /media/bundle/install.sh` is the whole story.

POSIX sh (dash on Debian/Ubuntu), `set -eu`, nothing but coreutils, grep, sed and the server's python3:
1. check every `tool/` file and install.sh itself against SHA256SUMS (and refuse a file in tool/ that
   SHA256SUMS does not list: pip would happily pick a planted wheel with a higher version);
2. find python3 (python3.X of the bundle's target first), warn when its X.Y is not the target's;
3. make a venv with `python3 -m venv --without-pip` (Debian and Ubuntu ship the venv module with python3
   itself; only ensurepip sits in python3-venv, and --without-pip never calls it), then install airgap into
   it with pip run from its own wheel in tool/ (`python tool/pip-*.whl/pip install --no-index ...`), so
   the server needs neither pip nor python3-venv; an existing venv made from the same tool/ is reused;
4. `exec airgap install BUNDLE "$@"`: its exit code is the script's.

It is invoked as `sh install.sh`, never executed directly: USB drives are often mounted noexec and FAT32
keeps no mode bits.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from airgap.digests import sha256_bytes
from airgap.fsutil import write_atomic
from airgap.lock import ToolFile

INSTALL_SH = "install.sh"
# Where install.sh puts airgap itself: its own venv, apart from the python layer's (python.venv).
TOOL_VENV = "/opt/airgap/tool"
STAMP = ".airgap-tool"  # in the venv: digest of the tool/ lines of SHA256SUMS it was installed from

_TEMPLATE = r"""#!/bin/sh
# airgap bundle bootstrap. On the isolated server, as root:
#     sh /path/to/bundle/install.sh [airgap install options]    e.g. --dry-run, --only images, --key site.pub
# It checks tool/ against SHA256SUMS, installs airgap @AIRGAP_VERSION@ (offline, from tool/) into a venv made
# with this server's python3, then runs `airgap install /path/to/bundle [options]` and exits with its code.
# Environment: AIRGAP_VENV   where the venv goes (default @TOOL_VENV@; an absolute path)
#              AIRGAP_PYTHON which python to use (default python@TARGET_PYTHON@, else python3)
# Made by airgap @AIRGAP_VERSION@ for python @TARGET_PYTHON@. See docs/self-install.md.
set -eu

AIRGAP_VERSION='@AIRGAP_VERSION@'
TARGET_PYTHON='@TARGET_PYTHON@'
me='install.sh'
nl='
'

say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { say "$@"; exit 1; }

# Nothing from the caller's environment may change which python code runs or where pip looks.
unset PYTHONHOME PYTHONPATH PYTHONSTARTUP PYTHONUSERBASE PIP_CONFIG_FILE
export PYTHONNOUSERSITE=1

start=$(pwd)
case $0 in */*) dir=${0%/*} ;; *) dir=. ;; esac
here=$(cd "$dir" && pwd -P) || die "cannot enter the bundle directory '$dir'."
[ -f "$here/SHA256SUMS" ] || die "no SHA256SUMS in $here: run this script from a complete bundle, as \
'sh /path/to/bundle/install.sh', or copy the bundle again."
command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is missing; it is needed to check the bundle."

venv=${AIRGAP_VENV:-@TOOL_VENV@}
case $venv in /*) ;; *) die "AIRGAP_VENV must be an absolute path, not '$venv'." ;; esac
venv=${venv%/}
[ -n "$venv" ] || die "AIRGAP_VENV must not be /."

# --- 1. the sums of tool/ (and of this script) ------------------------------------------------------------
cd "$here"
sums=$(grep -E '^[0-9a-f]{64} [ *](tool/|install\.sh$)' SHA256SUMS || true)
case $sums in
*" tool/"* | *"*tool/"*) ;;
*) die "SHA256SUMS lists no tool/ files: this bundle was collected without airgap itself (--no-tool). \
Install airgap $AIRGAP_VERSION on this server another way, then run: airgap install $here" ;;
esac
if ! out=$(printf '%s\n' "$sums" | LC_ALL=C sha256sum -c - 2>&1); then
    printf '%s\n' "$out" | sed -n 's/^\(.*\): FAILED.*$/\1/p' | while IFS= read -r bad; do
        say "$bad is damaged or missing: its sha256 is not the one SHA256SUMS lists."
    done
    die "nothing was installed. Copy the bundle again from the original (at least the file(s) named above), \
then run this script again."
fi
listed=$(printf '%s\n' "$sums" | sed -n 's/^[0-9a-f]\{64\} [ *]tool\///p')
for f in tool/* tool/.[!.]*; do
    [ -e "$f" ] || continue
    case "$nl$listed$nl" in
    *"$nl${f#tool/}$nl"*) ;;
    *) die "$f is not listed in SHA256SUMS: it was added after the bundle was made, and pip could pick it up. \
Remove it (or copy the bundle again), then run this script again." ;;
    esac
done
stamp=$(printf '%s\n' "$sums" | grep ' [ *]tool/' | LC_ALL=C sort | sha256sum | cut -c1-64)
pipwhl=
for w in tool/pip-*.whl; do [ -f "$w" ] && pipwhl=$here/$w; done
[ -n "$pipwhl" ] || die "tool/ holds no pip wheel (tool/pip-*.whl); collect the bundle again."

# --- 2. python3 ---------------------------------------------------------------------------------------------
py=
if [ -n "${AIRGAP_PYTHON:-}" ]; then
    py=$(command -v "$AIRGAP_PYTHON" 2>/dev/null) || die "AIRGAP_PYTHON=$AIRGAP_PYTHON: no such program."
else
    for cand in "python$TARGET_PYTHON" python3; do
        if py=$(command -v "$cand" 2>/dev/null); then break; fi
        py=
    done
fi
if [ -z "$py" ]; then
    debs=$(ls layers/01-prereqs/python3*.deb layers/01-prereqs/libpython3*.deb 2>/dev/null || true)
    if [ -n "$debs" ]; then
        die "no python3 on this server (PATH=$PATH). This bundle's airgap needs python $TARGET_PYTHON; the \
bundle carries its .debs: cd $here && dpkg -i layers/01-prereqs/*python3*.deb   then run this script again."
    fi
    die "no python3 on this server (PATH=$PATH). This bundle's airgap needs python $TARGET_PYTHON: install \
python$TARGET_PYTHON (Debian/Ubuntu: the python3 package) from your local mirror or media, then run this script \
again (or set AIRGAP_PYTHON to a python$TARGET_PYTHON elsewhere)."
fi
pyver=$("$py" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$py does not run."
if [ "$pyver" != "$TARGET_PYTHON" ]; then
    say "warning: $py is python $pyver, but tool/ was collected for python $TARGET_PYTHON: compiled wheels \
(pydantic-core, PyYAML, ...) will not install. Set AIRGAP_PYTHON to a python$TARGET_PYTHON, or collect the \
bundle again with target.python: \"$pyver\"."
fi

# --- a signature, when asked for: check it before anything from the bundle runs, if minisign is here ---------
key=
prev=
for a in "$@"; do
    case $prev in --key) key=$a ;; esac
    case $a in --key=*) key=${a#--key=} ;; esac
    prev=$a
done
if [ -n "$key" ]; then
    case $key in /*) keypath=$key ;; *) keypath=$start/$key ;; esac
    if command -v minisign >/dev/null 2>&1; then
        [ -f SHA256SUMS.sig ] || die "--key given but the bundle has no SHA256SUMS.sig: refused."
        minisign -Vm SHA256SUMS -x SHA256SUMS.sig -p "$keypath" >&2 || die "SHA256SUMS.sig is not a valid \
signature by $key: refused, nothing was installed."
    else
        say "note: airgap from tool/ checks the signature; to check it before any code from the bundle runs, \
verify with minisign first (docs/self-install.md)."
    fi
fi

# --- 3. the venv ----------------------------------------------------------------------------------------------
if [ -f "$venv/$STAMP_NAME" ] && [ "$(cat "$venv/$STAMP_NAME")" = "$stamp" ] && [ -x "$venv/bin/airgap" ] &&
    "$venv/bin/python" -I -c "import sys, airgap; sys.exit(airgap.__version__ != '$AIRGAP_VERSION')" 2>/dev/null; then
    say "airgap $AIRGAP_VERSION is already installed in $venv from this tool/; using it."
else
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
        die "$venv exists and is not a virtual environment: refusing to replace it. Set AIRGAP_VENV to another \
directory, or remove it."
    fi
    parent=${venv%/*}
    if ! mkdir -p "${parent:-/}" 2>/dev/null || [ ! -w "${parent:-/}" ]; then
        die "cannot write to ${parent:-/}: run this script as root (sudo sh $here/install.sh), or set AIRGAP_VENV \
to a directory you can write."
    fi
    say "creating $venv with $py (python $pyver)"
    if ! out=$("$py" -m venv --clear --without-pip "$venv" 2>&1); then
        printf '%s\n' "$out" >&2
        debs=$(ls layers/01-prereqs/python3*-venv_*.deb 2>/dev/null || true)
        fix="install python$pyver-venv (Debian/Ubuntu) from your local mirror or media"
        [ -z "$debs" ] || fix="install it from the bundle: cd $here && dpkg -i layers/01-prereqs/python3*-venv_*.deb"
        die "'$py -m venv' failed (above). Debian and Ubuntu ship the venv module with python3 itself; if it \
is missing here, $fix, then run this script again."
    fi
    say "installing airgap $AIRGAP_VERSION into $venv (offline, from $here/tool)"
    if ! "$venv/bin/python" "$pipwhl/pip" install --isolated --no-index --find-links "$here/tool" \
        --only-binary=:all: --no-cache-dir --disable-pip-version-check --no-warn-script-location --quiet \
        "airgap==$AIRGAP_VERSION"; then
        why=""
        [ "$pyver" = "$TARGET_PYTHON" ] || why=" Most likely cause: python $pyver here, tool/ is for python \
$TARGET_PYTHON (see the warning above)."
        die "installing airgap from tool/ failed (pip's message above).$why"
    fi
    printf '%s\n' "$stamp" >"$venv/$STAMP_NAME"
fi

# --- 4. airgap install, with the same arguments ---------------------------------------------------------------
cd "$start"
exec "$venv/bin/airgap" install "$here" "$@"
"""

_VERSION_RE = re.compile(r"^[0-9A-Za-z.+!_-]+$")
_PYTHON_RE = re.compile(r"^\d+\.\d+$")


def render_install_sh(version: str, target_python: str) -> str:
    """The script text for airgap VERSION and a target python X.Y (both end up inside single quotes)."""
    if not _VERSION_RE.match(version):
        raise ValueError(f"airgap version {version!r} cannot be written into install.sh")
    if not _PYTHON_RE.match(target_python):
        raise ValueError(f"target python {target_python!r}: expected X.Y")
    return (
        _TEMPLATE.replace("@AIRGAP_VERSION@", version)
        .replace("@TARGET_PYTHON@", target_python)
        .replace("@TOOL_VENV@", TOOL_VENV)
        .replace("$STAMP_NAME", STAMP)
    )


def write_install_sh(bundle: Path, version: str, target_python: str) -> ToolFile:
    """Write bundle/install.sh (atomically) and return its SHA256SUMS entry."""
    data = render_install_sh(version, target_python).encode()
    path = bundle / INSTALL_SH
    write_atomic(path, data)
    with contextlib.suppress(OSError):  # FAT32 keeps no mode bits; the script is run with `sh` anyway
        os.chmod(path, 0o755)
    return ToolFile(path=INSTALL_SH, size=len(data), sha256=sha256_bytes(data))
