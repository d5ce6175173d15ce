#!/usr/bin/env bash
# What the microseg image (Docker or Apptainer) does when it starts.
#
#   lab                                 JupyterLab on $MICROSEG_PORT (default 8888), token from
#                                       $MICROSEG_TOKEN or generated and printed
#   papermill NOTEBOOK [OPTIONS...]     run one notebook headless; OPTIONS go to papermill
#                                       (e.g. -p quick True -p run_dir runs/exp1)
#   anything else                       run as a command (bash, python -m pytest, ...)
#
# Work happens in the results folder ($MICROSEG_RESULTS, default /results), so run folders,
# executed notebooks and edited notebooks stay on the host after the container exits. Notebooks
# run in results/notebooks in both modes (as `make lab` runs them in notebooks/), so a relative
# run_dir such as runs/demo means the same folder in JupyterLab and under papermill.
set -euo pipefail

microseg_home=${MICROSEG_HOME:-/opt/microseg}
results=${MICROSEG_RESULTS:-/results}

die() {
    echo "error: $*" >&2
    exit 1
}

require_writable_results() {
    mkdir -p "$results" 2>/dev/null || true
    [ -w "$results" ] || die "$results is not writable. Mount a results folder read-write: " \
        "docker run -v \"\$PWD/results:$results\" ... or apptainer run --bind results:$results ..."
}

# Apptainer keeps the host's home; Docker started with --user UID may have no writable home.
ensure_writable_home() {
    if [ -z "${HOME:-}" ] || [ ! -w "$HOME" ]; then
        HOME=$(mktemp -d)
        export HOME
    fi
}

# The user's copy of the notebooks lives in the results folder. A notebook already there (perhaps
# edited) is never replaced.
copy_notebooks() {
    mkdir -p "$results/notebooks"
    local notebook
    for notebook in "$microseg_home"/notebooks/*.ipynb; do
        [ -e "$notebook" ] || continue
        [ -e "$results/notebooks/${notebook##*/}" ] || cp "$notebook" "$results/notebooks/"
    done
}

start_lab() {
    copy_notebooks
    local port=${MICROSEG_PORT:-8888}
    local token=${MICROSEG_TOKEN:-}
    if [ -z "$token" ]; then
        token=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')
    fi
    echo "microseg: JupyterLab listens on port $port inside the container."
    echo "microseg: open http://127.0.0.1:$port/lab?token=$token (with docker -p, use the host port)"
    # No news feed or update check: the image stays quiet on networks without internet access.
    JUPYTER_TOKEN=$token exec jupyter lab --no-browser \
        --ServerApp.ip="${MICROSEG_IP:-0.0.0.0}" \
        --ServerApp.port="$port" \
        --ServerApp.port_retries="${MICROSEG_PORT_RETRIES:-0}" \
        --ServerApp.root_dir="$results" \
        --LabApp.news_url='' --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate "$@"
}

# A notebook is looked up as given, then among the notebooks shipped in the image.
find_notebook() {
    local name=$1
    local candidate
    for candidate in "$name" "$microseg_home/notebooks/$name" "$microseg_home/notebooks/$name.ipynb"; do
        if [ -f "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    die "notebook $name not found; expected a path or one of: $(cd "$microseg_home/notebooks" && echo ./*.ipynb)"
}

# A fresh file name for the executed notebook: an earlier run's copy is never replaced.
executed_copy_path() {
    local stem
    stem="${1%.ipynb}-$(date +%Y%m%d-%H%M%S)"
    local output="$results/executed/$stem.ipynb"
    local k=1
    mkdir -p "$results/executed"
    while [ -e "$output" ]; do
        k=$((k + 1))
        output="$results/executed/$stem-$k.ipynb"
    done
    echo "$output"
}

run_papermill() {
    [ $# -ge 1 ] || die "usage: papermill NOTEBOOK [papermill options, e.g. -p quick True]"
    local notebook
    notebook=$(find_notebook "$1")
    shift
    local output
    output=$(executed_copy_path "${notebook##*/}")
    mkdir -p "$results/notebooks"
    echo "microseg: running $notebook, executed copy: $output"
    exec papermill "$notebook" "$output" --kernel python3 --cwd "$results/notebooks" "$@"
}

main() {
    ensure_writable_home
    case "${1:-lab}" in
        lab)
            require_writable_results
            shift || true
            start_lab "$@"
            ;;
        papermill)
            require_writable_results
            shift
            run_papermill "$@"
            ;;
        *)
            exec "$@"
            ;;
    esac
}

main "$@"
