# Sourced by scripts/serve and scripts/test: make sure .venv exists and holds the project.
# Idempotent: the install runs again only when setup.cfg/pyproject.toml or the extra changes.
# Usage: bootstrap_venv [extra]   (extra: "" for the gateway only, "test" for the test suite)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "clawgate needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

bootstrap_venv() {
    local extra="${1:-}" python stamp want
    want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
    stamp="$VENV/.clawgate-installed${extra:+-$extra}"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    # No venv, or one without pip: a first run that failed or was stopped while creating it
    # (Debian without python3-venv stops after bin/python) must not stop every later run.
    if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        python="$(find_python)" || return 1
        echo "creating $VENV with $python" >&2
        "$python" -m venv --clear "$VENV" || return 1
    fi
    echo "installing clawgate${extra:+[$extra]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --editable "$ROOT${extra:+[$extra]}" || return 1
    echo "$want" > "$stamp"
}
