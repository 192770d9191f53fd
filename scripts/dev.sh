#!/usr/bin/env bash
# The README's two commands: `bash scripts/dev.sh demo` and `bash scripts/dev.sh test`.
# Each makes (or refreshes) .venv from pyproject.toml with nothing but Python 3.11 on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$python" -c 'import sys; assert sys.version_info >= (3, 11), "jobtracker needs Python 3.11+"'
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi

case "${1:-}" in
    demo)
        shift
        exec .venv/bin/jobtracker demo "$@"
        ;;
    test)
        shift
        .venv/bin/ruff check jobtracker tests scripts
        .venv/bin/mypy --strict jobtracker
        exec .venv/bin/pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh demo|test [args]" >&2
        exit 2
        ;;
esac
