# Sourced by the launchers: the interpreter and import path of this checkout.
# PYTHON, when set, wins; else the project's .venv (made by `make install`)
# when it exists; else `python` on PATH.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then
        PYTHON="$REPO/.venv/bin/python"
    else
        PYTHON=python
    fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# require_count NAME VALUE [MIN]: VALUE must be a whole number >= MIN (1),
# else one error line and exit status 1 (torchrun would fail deep inside).
require_count() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "${3:-1}" ]; then
        echo "error: $1 must be a whole number >= ${3:-1}, got '$2'" >&2
        exit 1
    fi
}
