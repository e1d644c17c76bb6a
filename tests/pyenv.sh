# The tests' Python environment (sourced): one virtual environment with the
# real clients and references the tests compare fptq with: compressed-tensors
# (and torch, transformers, tokenizers, which it brings) for the export
# checks, gguf and accelerate for transformers' GGUF loader (the SmolLM2
# conversion). Made once under a lock and reused while its stamp matches
# PYENV_REQ (about 5.7 GB, 1.5-3 min to make); FPTQ_EXPORT_VENV=DIR puts it
# elsewhere, so that build trees and CI runs share one.
# pyenv_ensure VENV_DIR: makes or reuses it; prints what it did; returns 1 on failure.
PYENV_REQ="compressed-tensors==0.20.0 gguf==0.19.0 accelerate==1.16.0"

pyenv_ensure() {
    local venv=$1 log
    log=$(mktemp "${TMPDIR:-/tmp}/fptq_pyenv.XXXXXX")
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    if [ "$(cat "$venv/.fptq-stamp" 2>/dev/null)" != "$PYENV_REQ" ]; then
        # only a folder this script made (or none) is replaced
        if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
            echo "FAIL $venv exists and is not a virtual environment; remove it"
            flock -u 9
            return 1
        fi
        local t0
        t0=$(date +%s)
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >"$log" 2>&1; then
            echo "FAIL python3 -m venv: $(tail -3 "$log") (Debian: apt-get install python3-venv)"
            flock -u 9
            return 1
        fi
        # shellcheck disable=SC2086
        if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $PYENV_REQ >"$log" 2>&1; then
            echo "FAIL pip install $PYENV_REQ: $(tail -5 "$log")"
            flock -u 9
            return 1
        fi
        echo "$PYENV_REQ" >"$venv/.fptq-stamp"
        echo "python environment: $PYENV_REQ with $("$venv/bin/python" -m pip list 2>/dev/null | grep -E '^(torch|transformers) ' | tr -s ' ' | tr '\n' ' ')," \
             "$(du -sh "$venv" | cut -f1), made in $(($(date +%s) - t0)) s"
    fi
    flock -u 9
    rm -f "$log"
    return 0
}
