# Sourced by the scripts: create .venv with Python >= 3.11 and install sagents with $EXTRAS
# (comma-separated, e.g. "dev" or "web,openai").
#
# pip runs only when something that decides the install changed since the last one: a stamp
# file per set of extras, .venv/.sagents-installed-$EXTRAS, holds a checksum of pyproject.toml
# (dependencies, extras, entry points), sagents' version line (hatch reads it from
# src/sagents/__init__.py), .venv/pyvenv.cfg (which Python), the checkout's path (the editable
# install points there) and the extras. A new module needs no reinstall (the install is editable).
# Asking pip every time cost about 2.5 s per start, most of it pip upgrading itself.
# SAGENTS_REINSTALL=1 forces the install (e.g. after removing packages from .venv by hand).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "sagents needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    "$PYTHON" -m venv .venv
    rm -f .venv/.sagents-installed-*  # stamps of a venv that is gone
fi
_stamp=".venv/.sagents-installed-${EXTRAS}"
_key="$(
    {
        printf '%s\n%s\n' "$EXTRAS" "$PWD"
        cat pyproject.toml .venv/pyvenv.cfg
        grep '^__version__' src/sagents/__init__.py
    } | cksum
)"
if [ "${SAGENTS_REINSTALL:-}" = "1" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_key" ]; then
    rm -f "$_stamp"
    # pip's notes about index locations it skips are noise here; its errors still show.
    _pip() {
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
            | { grep -v "^WARNING: Location" || true; }
    }
    _pip --upgrade pip
    _pip -e ".[${EXTRAS}]"
    # Written only after pip succeeded (set -e and pipefail stop the script before this line).
    printf '%s\n' "$_key" >"$_stamp"
fi
unset _stamp _key
unset -f _pip 2>/dev/null || true
