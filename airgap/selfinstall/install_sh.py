"""install.sh: the bundle's bootstrap, so that `sudo sh /media/bundle/install.sh` is the whole story.

POSIX sh (dash on Debian/Ubuntu), `set -eu`, nothing but coreutils, grep, sed, the server's python3 and, for
a signature, openssl 3 or minisign. Nothing from the bundle runs before steps 1-3 have passed:
1. SHA256SUMS (and SHA256SUMS.sig) are read once, into a private temp dir; everything after is decided on
   those copies, so a file swapped on the drive meanwhile changes nothing;
2. the signature: the trusted keys are `--key FILE` and every `/etc/airgap/keys/*.pub` (and, with `--root`,
   ROOT's too, as `airgap install` reads them). Any trusted key makes a valid signature by one of them
   mandatory; with none, the script says loudly that the signature was not checked and goes on. It checks
   minisign's format itself (key IDs, the signature of BLAKE2b-512(SHA256SUMS), the global signature over
   signature + trusted comment) with `openssl pkeyutl -rawin` (OpenSSL 3.0+; 1.1.1 has no -rawin, so openssl
   is first proved on RFC 8032's test vector, both ways), else with minisign; with neither, it refuses;
3. every `tool/` file SHA256SUMS lists is copied into the private dir and checked there (`sha256sum -c`), and
   a file in tool/ that SHA256SUMS does not list is refused (pip would happily prefer a planted click-99);
   pip later reads the checked copies only;
4. python3 (python3.X of the bundle's target first; one that does not run is passed over), a venv made with
   `python3 -m venv --without-pip` (Debian and Ubuntu ship the venv module with python3 itself; only ensurepip
   sits in python3-venv), and
   airgap installed into it by pip run from its own wheel in tool/; an existing venv made from the same tool/
   is reused;
5. `exec airgap install BUNDLE "$@"`: its exit code is the script's; it verifies the rest of the bundle.

It is invoked as `sh install.sh`, never executed directly: USB drives are often mounted noexec and FAT32
keeps no mode bits. Whoever can rewrite tool/ and SHA256SUMS can rewrite install.sh too: the trust anchor is
a check made before it runs, with tools that did not travel in the bundle (docs/signing.md).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from airgap.bundle_layout import TRUSTED_KEYS_DIR
from airgap.digests import sha256_bytes
from airgap.fsutil import write_atomic
from airgap.lock import ToolFile

INSTALL_SH = "install.sh"
# Where install.sh puts airgap itself: its own venv, apart from the python layer's (python.venv).
TOOL_VENV = "/opt/airgap/tool"
STAMP = ".airgap-tool"  # in the venv: digest of the tool/ lines of SHA256SUMS it was installed from
# Every program install.sh runs before python, besides openssl or minisign: all in coreutils, grep and sed.
COMMANDS = (
    "sha256sum",
    "grep",
    "sed",
    "sort",
    "cut",
    "ls",
    "cat",
    "mkdir",
    "mktemp",
    "rm",
    "head",
    "tail",
    "wc",
    "od",
    "base64",
    "tr",
)

_TEMPLATE = r"""#!/bin/sh
# airgap bundle bootstrap. On the isolated server, as root:
#     sh /path/to/bundle/install.sh [airgap install options]    e.g. --dry-run, --only images, --key site.pub
# Before anything from the bundle runs, it checks SHA256SUMS.sig against the trusted keys (--key FILE and
# @KEYS_DIR@/*.pub; with openssl 3 or minisign) and every tool/ file against SHA256SUMS. Then it installs
# airgap @AIRGAP_VERSION@ (offline, from tool/) into a venv made with this server's python3, runs
# `airgap install /path/to/bundle [options]` and exits with its code.
# Environment: AIRGAP_VENV   where the venv goes (default @TOOL_VENV@; an absolute path)
#              AIRGAP_PYTHON which python to use (default python@TARGET_PYTHON@, else python3)
# Made by airgap @AIRGAP_VERSION@ for python @TARGET_PYTHON@. See docs/self-install.md and docs/signing.md.
set -eu

AIRGAP_VERSION='@AIRGAP_VERSION@'
TARGET_PYTHON='@TARGET_PYTHON@'
KEYS_DIR='@KEYS_DIR@'
me='install.sh'
nl='
'
cr=$(printf '\r')
nothing_ran='refused, nothing from the bundle was run'

say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { say "$@"; exit 1; }
bad_input() { say "$@"; exit 2; }

# Nothing from the caller's environment may change which python code runs or where pip looks.
unset PYTHONHOME PYTHONPATH PYTHONSTARTUP PYTHONUSERBASE PIP_CONFIG_FILE
export PYTHONNOUSERSITE=1

for c in @COMMANDS@; do
    command -v "$c" >/dev/null 2>&1 || die "$c is missing on this server; install.sh needs it (coreutils, grep, \
sed) to check the bundle before anything from it runs."
done

start=$(pwd)
case $0 in */*) dir=${0%/*} ;; *) dir=. ;; esac
here=$(cd "$dir" && pwd -P) || die "cannot enter the bundle directory '$dir'."
[ -f "$here/SHA256SUMS" ] || die "no SHA256SUMS in $here: run this script from a complete bundle, as \
'sh /path/to/bundle/install.sh', or copy the bundle again."

venv=${AIRGAP_VENV:-@TOOL_VENV@}
case $venv in /*) ;; *) die "AIRGAP_VENV must be an absolute path, not '$venv'." ;; esac
venv=${venv%/}
[ -n "$venv" ] || die "AIRGAP_VENV must not be /."

# The options of `airgap install` that decide which keys are trusted (the last one counts, as for airgap).
key='' keyset=0 root=/ prev=''
for a in "$@"; do
    case $prev in
    --key) key=$a keyset=1 ;;
    --root) root=$a ;;
    esac
    if [ -n "$prev" ]; then
        prev=
        continue
    fi
    case $a in
    --) break ;;
    --key=*) key=${a#--key=} keyset=1 ;;
    --root=*) root=${a#--root=} ;;
    --key | --root | --only | --skip | --from | --base) prev=$a ;;
    esac
done

# --- helpers ----------------------------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/airgap-install.XXXXXX") || die "cannot make a private temporary directory \
(mktemp -d in ${TMPDIR:-/tmp})."
tmp=$(cd "$tmp" && pwd -P)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

plain() { [ -f "$1" ] && [ ! -L "$1" ]; }
size() {
    _sz=$(wc -c <"$1") && echo $((_sz))
}
# take FILE COPY MAX FIX: FILE, read once into the private COPY (at most MAX bytes); every later check
# reads COPY, so a FILE swapped on the drive meanwhile changes nothing.
take() {
    plain "$1" || die "$1 is not a regular file (a link, a directory or a device): $nothing_ran. $4"
    head -c "$(($3 + 1))" -- "$1" >"$2" || die "cannot read $1."
    [ "$(size "$2")" -le "$3" ] || die "$1 is larger than $3 bytes, far more than airgap writes: $nothing_ran. $4"
}
hexof() { od -An -v -tx1 "$@" | tr -d ' \n'; } # hexof [od options] FILE
# b64d TEXT OUT: the bytes of the base64 TEXT into OUT; false when TEXT is not base64.
b64d() {
    case $1 in '' | *[!A-Za-z0-9+/=]*) return 1 ;; esac
    printf '%s\n' "$1" | base64 -d >"$2" 2>/dev/null
}
# minisign shows a key ID as its 8 bytes read little-endian, in upper-case hex.
keyid_text() {
    _kt='' _kr=$1
    while [ -n "$_kr" ]; do
        _kt=${_kr%"${_kr#??}"}$_kt
        _kr=${_kr#??}
    done
    printf '%s' "$_kt" | tr a-f A-F
}
pem_begin='-----BEGIN PUBLIC KEY-----'
pem_end='-----END PUBLIC KEY-----'
ed25519_der='MCowBQYDK2VwAyEA' # base64 of the 12-byte DER prefix of an Ed25519 public key (a multiple of 3)
# ossl_verifies PEM MESSAGE SIGNATURE: openssl says, in words and exit code, that the signature is valid.
ossl_verifies() {
    _ov=$(openssl pkeyutl -verify -pubin -inkey "$1" -rawin -in "$2" -sigfile "$3" 2>&1) || return 1
    case $_ov in *"Signature Verified Successfully"*) return 0 ;; esac
    return 1
}
# Can this openssl verify Ed25519 (3.0 and later; 1.1.1 has no -rawin)? Proved on RFC 8032's test 2, where
# a valid signature must pass and the same signature over another message must fail, and on BLAKE2b-512.
ossl_usable() {
    printf '%s\n%s%s\n%s\n' "$pem_begin" "$ed25519_der" 'PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=' \
        "$pem_end" >"$tmp/probe.pem"
    b64d 'kqAJqfDUyrhyDoILX2QlQKKye1QWUD+Ps3YiI+vbadoIWsHkPhWZbkWPNhPQ8R2MOHsurrQwKu6wDSkWErsMAA==' \
        "$tmp/probe.sig" || return 1
    printf 'r' >"$tmp/probe.ok"
    printf 's' >"$tmp/probe.bad"
    ossl_verifies "$tmp/probe.pem" "$tmp/probe.ok" "$tmp/probe.sig" || return 1
    if ossl_verifies "$tmp/probe.pem" "$tmp/probe.bad" "$tmp/probe.sig"; then return 1; fi
    openssl dgst -blake2b512 -binary <"$tmp/probe.ok" >"$tmp/probe.b2" 2>/dev/null || return 1
    [ "$(size "$tmp/probe.b2")" -eq 64 ]
}

# --- 1. SHA256SUMS and its signature, read once ---------------------------------------------------------
cd "$here"
again='Copy the bundle again from the original.'
take SHA256SUMS "$tmp/sums" 67108864 "$again"
signed=0
if [ -e SHA256SUMS.sig ] || [ -L SHA256SUMS.sig ]; then
    take SHA256SUMS.sig "$tmp/sig" 65536 "$again"
    signed=1
fi

# minisign's format: line 2 base64("ED" or "Ed" + key ID[8] + signature[64]), line 3 "trusted comment: ...",
# line 4 base64(signature[64] of signature + trusted comment).
sig_problem='' sigid='' tc='' prehashed=0
if [ $signed = 1 ]; then
    l2=$(sed -n 2p "$tmp/sig" | tr -d '\r')
    l3=$(sed -n 3p "$tmp/sig")
    l3=${l3%"$cr"}
    l4=$(sed -n 4p "$tmp/sig" | tr -d '\r')
    case $l3 in
    "trusted comment: "*) tc=${l3#"trusted comment: "} ;;
    *) sig_problem="not a minisign signature file (line 3 is not 'trusted comment: ...')" ;;
    esac
    if [ -n "$sig_problem" ]; then
        :
    elif ! b64d "$l2" "$tmp/sigblob" || [ "$(size "$tmp/sigblob")" -ne 74 ]; then
        sig_problem="damaged: line 2 is not a base64 minisign signature"
    elif ! b64d "$l4" "$tmp/gsig" || [ "$(size "$tmp/gsig")" -ne 64 ]; then
        sig_problem="damaged: line 4 is not the base64 signature of the trusted comment"
    else
        case $(hexof -N2 "$tmp/sigblob") in
        4544) prehashed=1 ;; # "ED": signs BLAKE2b-512(SHA256SUMS), what airgap and minisign >= 0.8 write
        4564) prehashed=0 ;; # "Ed": signs SHA256SUMS itself
        *) sig_problem="not an Ed25519 minisign signature" ;;
        esac
        sigid=$(hexof -j2 -N8 "$tmp/sigblob")
        tail -c 64 "$tmp/sigblob" >"$tmp/sig64"
    fi
fi

# --- 2. the trusted keys, and the signature by one of them -------------------------------------------------
nkeys=0 match='' matchname='' keynames=''
# trust FILE SHOWN: FILE is a trusted public key; it is kept in $match when its key ID made SHA256SUMS.sig.
trust() {
    nkeys=$((nkeys + 1))
    _kc=$tmp/key$nkeys
    plain "$1" || bad_input "$2: not a regular file; a trusted key is the .pub file of 'airgap keygen'."
    head -c 65537 -- "$1" >"$_kc.pub" || bad_input "$2: cannot read it."
    case $(sed -n 1p "$_kc.pub") in
    *"airgap secret key"*) bad_input "$2: this is a secret key, not an Ed25519 minisign public key. Keep the \
.key file on the collecting side (and off this server); trust the .pub file." ;;
    esac
    if ! b64d "$(sed -n 2p "$_kc.pub" | tr -d '\r')" "$_kc.raw" || [ "$(size "$_kc.raw")" -ne 42 ] ||
        [ "$(hexof -N2 "$_kc.raw")" != 4564 ]; then
        bad_input "$2: not an Ed25519 minisign public key. Use the .pub file of 'airgap keygen'."
    fi
    _kid=$(hexof -j2 -N8 "$_kc.raw")
    keynames="$keynames${keynames:+, }$2 (key ID $(keyid_text "$_kid"))"
    if [ -z "$match" ] && [ "$_kid" = "$sigid" ]; then
        match=$_kc matchname=$2
        printf '%s\n%s%s\n%s\n' "$pem_begin" "$ed25519_der" "$(tail -c 32 "$_kc.raw" | base64)" "$pem_end" \
            >"$_kc.pem"
    fi
}
if [ $keyset = 1 ]; then
    [ -n "$key" ] || bad_input "--key needs a file: the public key (.pub) the bundle must be signed by."
    case $key in /*) keypath=$key ;; *) keypath=$start/$key ;; esac
    [ -e "$keypath" ] || [ -L "$keypath" ] || bad_input "--key $key: no such file. Give the .pub file of \
'airgap keygen'."
    trust "$keypath" "$key"
fi
# airgap install reads ROOT/etc/airgap/keys; this server's own keys count too, since tool/ runs here as root.
rootkeys=
case ${root%/} in
'') ;;
/*) rootkeys=${root%/}$KEYS_DIR ;;
*) rootkeys=$start/${root%/}$KEYS_DIR ;;
esac
[ "$rootkeys" != "$KEYS_DIR" ] || rootkeys=
for d in "$KEYS_DIR" ${rootkeys:+"$rootkeys"}; do
    for k in "$d"/*.pub; do
        [ -e "$k" ] || [ -L "$k" ] || continue
        trust "$k" "$k"
    done
done

if [ $nkeys = 0 ]; then
    say "WARNING: the bundle's signature was NOT checked: no trusted key (no --key, no *.pub in \
$KEYS_DIR${rootkeys:+ or $rootkeys})."
    if [ -n "$sigid" ]; then
        say "WARNING: SHA256SUMS.sig names key ID $(keyid_text "$sigid"), but nothing on this server says that \
key is to be trusted."
    elif [ $signed = 1 ]; then
        say "WARNING: SHA256SUMS.sig is $sig_problem."
    else
        say "WARNING: the bundle is not signed."
    fi
    say "WARNING: tool/ is checked against SHA256SUMS only, and whoever had the drive could have rewritten both. \
To make a valid signature mandatory, install the signer's public key as $KEYS_DIR/NAME.pub \
('airgap keygen --help', docs/signing.md)."
else
    [ $signed = 1 ] || die "the bundle is not signed (no SHA256SUMS.sig), and this server trusts $keynames: \
$nothing_ran. Ask for a signed bundle (airgap sign BUNDLE --key KEY on the collecting side)."
    [ -z "$sig_problem" ] || die "SHA256SUMS.sig is $sig_problem: $nothing_ran. $again"
    [ -n "$match" ] || die "SHA256SUMS.sig is signed by key ID $(keyid_text "$sigid"), which is not a trusted \
key ($keynames): $nothing_ran. A bundle signed by another key is not to be trusted; check you were given the \
right public key."
    verifier=
    if command -v openssl >/dev/null 2>&1 && ossl_usable; then
        verifier=openssl
    elif command -v minisign >/dev/null 2>&1; then
        verifier=minisign
    fi
    altered="Do not install this bundle; get an intact copy from the collecting side."
    case $verifier in
    openssl)
        if [ $prehashed = 1 ]; then
            openssl dgst -blake2b512 -binary <"$tmp/sums" >"$tmp/msg" || die "openssl dgst -blake2b512 failed \
(above): $nothing_ran."
        else
            cat "$tmp/sums" >"$tmp/msg"
        fi
        ossl_verifies "$match.pem" "$tmp/msg" "$tmp/sig64" || die "SHA256SUMS.sig: the signature by $matchname \
does not match SHA256SUMS: the sums (or the signature) were changed after signing; $nothing_ran. $altered"
        { cat "$tmp/sig64" && printf '%s' "$tc"; } >"$tmp/gmsg"
        ossl_verifies "$match.pem" "$tmp/gmsg" "$tmp/gsig" || die "SHA256SUMS.sig: the trusted comment was \
altered after signing; $nothing_ran. $altered"
        ;;
    minisign)
        if ! mout=$(minisign -V -m "$tmp/sums" -x "$tmp/sig" -p "$match.pub" 2>&1); then
            printf '%s\n' "$mout" >&2
            die "SHA256SUMS.sig is not a valid signature of SHA256SUMS by $matchname (minisign's message above): \
$nothing_ran. $altered"
        fi
        ;;
    *)
        why="neither openssl nor minisign is installed"
        if command -v openssl >/dev/null 2>&1; then
            why="this openssl ($(openssl version 2>/dev/null || echo 'version unknown')) cannot verify Ed25519 \
signatures (OpenSSL 3.0 and later can) and minisign is not installed"
        fi
        die "this server trusts $keynames, so the bundle must carry a valid signature, but $why: \
SHA256SUMS.sig cannot be checked here before code from tool/ runs; $nothing_ran. Install openssl (3.0 or later) \
or minisign from your local mirror or media, or verify the bundle on another machine (minisign -Vm SHA256SUMS \
-x SHA256SUMS.sig -p KEY.pub; docs/signing.md) and install airgap on this server another way."
        ;;
    esac
    say "signature: valid, key ID $(keyid_text "$sigid") ($matchname), checked with $verifier; trusted comment: \
$(printf '%s' "$tc" | LC_ALL=C tr '\t' ' ' | LC_ALL=C tr -d '\000-\037\177')"
fi

# --- 3. tool/ (and this script) against the checked SHA256SUMS, on private copies -------------------------
sums=$(LC_ALL=C grep -E '^[0-9a-f]{64} [ *](tool/[A-Za-z0-9_+!-][A-Za-z0-9._+!-]*|install\.sh)$' "$tmp/sums" ||
    true)
case $sums in
*" tool/"* | *"*tool/"*) ;;
*) die "SHA256SUMS lists no tool/ files: this bundle was collected without airgap itself (--no-tool). \
Install airgap $AIRGAP_VERSION on this server another way, then run: airgap install $here" ;;
esac
if [ ! -d tool ] || [ -L tool ]; then
    die "tool is not a directory (a link?): $nothing_ran. $again"
fi
listed=$(printf '%s\n' "$sums" | sed -n 's/^[0-9a-f]\{64\} [ *]tool\///p')
for f in tool/* tool/.[!.]* tool/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    case ${f#tool/} in
    .* | *[!A-Za-z0-9._+!-]*) die "$f: not a name airgap gives a file in tool/: $nothing_ran. Remove it (or copy \
the bundle again), then run this script again." ;;
    esac
    case "$nl$listed$nl" in
    *"$nl${f#tool/}$nl"*) ;;
    *) die "$f is not listed in SHA256SUMS: it was added after the bundle was made, and pip could pick it up; \
$nothing_ran. Remove it (or copy the bundle again), then run this script again." ;;
    esac
done
mkdir "$tmp/tool"
set -f
ifs=$IFS
IFS=$nl
for name in $listed; do
    if plain "tool/$name"; then
        cat -- "tool/$name" >"$tmp/tool/$name" || die "cannot read tool/$name."
    elif [ -e "tool/$name" ] || [ -L "tool/$name" ]; then
        die "tool/$name is not a regular file (a link, a directory or a device): $nothing_ran. $again"
    fi
done
IFS=$ifs
set +f
if plain install.sh; then cat install.sh >"$tmp/install.sh"; fi
if ! out=$(cd "$tmp" && printf '%s\n' "$sums" | LC_ALL=C sha256sum -c - 2>&1); then
    printf '%s\n' "$out" | sed -n 's/^\(.*\): FAILED.*$/\1/p' | while IFS= read -r bad; do
        say "$bad is damaged or missing: its sha256 is not the one SHA256SUMS lists."
    done
    die "nothing from the bundle was run or installed. Copy the bundle again from the original (at least the \
file(s) named above), then run this script again."
fi
stamp=$(printf '%s\n' "$sums" | grep ' [ *]tool/' | LC_ALL=C sort | sha256sum | cut -c1-64)
pipwhl=
for w in "$tmp"/tool/pip-*.whl; do [ -f "$w" ] && pipwhl=$w; done
[ -n "$pipwhl" ] || die "tool/ holds no pip wheel (tool/pip-*.whl); collect the bundle again."

# --- 4. python3 --------------------------------------------------------------------------------------------
# A python counts once it runs: a python3.X that exists but is broken (a half-removed package, a wrapper
# left by another install) is named and passed over for the next candidate.
pyver=
# runs PROGRAM: it starts, imports sys and says its version X.Y (left in $pyver).
runs() {
    pyver=$("$1" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || return 1
    case $pyver in '' | *[!0-9.]* | .* | *. | *..*) return 1 ;; *.*) return 0 ;; esac
    return 1
}
py='' broken=''
if [ -n "${AIRGAP_PYTHON:-}" ]; then
    py=$(command -v "$AIRGAP_PYTHON" 2>/dev/null) || die "AIRGAP_PYTHON=$AIRGAP_PYTHON: no such program."
    runs "$py" || die "AIRGAP_PYTHON=$AIRGAP_PYTHON ($py) does not run: '$py -I -c \"import sys\"' fails. Set \
AIRGAP_PYTHON to a working python$TARGET_PYTHON, or unset it and this script looks for one."
else
    for cand in "python$TARGET_PYTHON" python3; do
        found=$(command -v "$cand" 2>/dev/null) || continue
        if runs "$found"; then
            py=$found
            break
        fi
        say "$found does not run ('$found -I -c \"import sys\"' fails); trying the next python."
        broken="$broken${broken:+, }$found"
    done
fi
if [ -z "$py" ]; then
    nopy="no python3 on this server (PATH=$PATH)"
    [ -z "$broken" ] || nopy="no working python3 on this server: $broken found, but none runs (PATH=$PATH)"
    debs=$(ls layers/01-prereqs/python3*.deb layers/01-prereqs/libpython3*.deb 2>/dev/null || true)
    if [ -n "$debs" ]; then
        die "$nopy. This bundle's airgap needs python $TARGET_PYTHON; the bundle carries its .debs: \
cd $here && dpkg -i layers/01-prereqs/*python3*.deb   then run this script again."
    fi
    die "$nopy. This bundle's airgap needs python $TARGET_PYTHON: install python$TARGET_PYTHON (Debian/Ubuntu: \
the python3 package) from your local mirror or media, then run this script again (or set AIRGAP_PYTHON to a \
python$TARGET_PYTHON elsewhere)."
fi
if [ "$pyver" != "$TARGET_PYTHON" ]; then
    say "warning: $py is python $pyver, but tool/ was collected for python $TARGET_PYTHON: compiled wheels \
(pydantic-core, PyYAML, ...) will not install. Set AIRGAP_PYTHON to a python$TARGET_PYTHON, or collect the \
bundle again with target.python: \"$pyver\"."
fi

# --- 5. the venv, from the checked copies of tool/ -------------------------------------------------------------
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
    say "installing airgap $AIRGAP_VERSION into $venv (offline, from the checked copy of $here/tool)"
    if ! "$venv/bin/python" "$pipwhl/pip" install --isolated --no-index --find-links "$tmp/tool" \
        --only-binary=:all: --no-cache-dir --disable-pip-version-check --no-warn-script-location --quiet \
        "airgap==$AIRGAP_VERSION"; then
        why=""
        [ "$pyver" = "$TARGET_PYTHON" ] || why=" Most likely cause: python $pyver here, tool/ is for python \
$TARGET_PYTHON (see the warning above)."
        die "installing airgap from tool/ failed (pip's message above).$why"
    fi
    printf '%s\n' "$stamp" >"$venv/$STAMP_NAME"
fi

# --- 6. airgap install, with the same arguments: it verifies the rest of the bundle -------------------------
cd "$start"
rm -rf "$tmp"
trap - EXIT INT TERM HUP
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
        .replace("@KEYS_DIR@", TRUSTED_KEYS_DIR)
        .replace("@COMMANDS@", " ".join(COMMANDS))
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
