#!/usr/bin/env bash
# The README's two commands: `bash scripts/dev.sh demo` and `bash scripts/dev.sh test`.
# Each makes (or refreshes) .venv from pyproject.toml with nothing but Python 3.11 on the machine:
# `demo` installs the package alone (what a SQLite user gets from `pip install jobtracker`),
# `test` adds the [dev] extra. Each remembers its own install, so switching between them works.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-$(command -v python3.11 || command -v python3)}

# install SPEC STAMP: `pip install -e SPEC` into .venv unless STAMP is newer than pyproject.toml.
install() {
    local spec=$1 stamp=.venv/$2
    if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
        return
    fi
    if [ ! -x .venv/bin/python ]; then
        "$python" -c 'import sys; assert sys.version_info >= (3, 11), "jobtracker needs Python 3.11+"'
        "$python" -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    .venv/bin/python -m pip install --quiet -e "$spec"
    touch "$stamp"
}

case "${1:-}" in
    demo)
        shift
        install . .installed-base
        exec .venv/bin/jobtracker demo "$@"
        ;;
    test)
        shift
        install '.[dev]' .installed-dev
        # The dashboard's browser tests need Debian's Chromium and its driver; without them they
        # are skipped (failed under CI=true).
        if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -q chromium chromium-driver
        fi
        .venv/bin/ruff check jobtracker tests scripts
        .venv/bin/mypy --strict jobtracker
        exec .venv/bin/pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh demo|test [args]" >&2
        exit 2
        ;;
esac
