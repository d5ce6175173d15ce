#!/usr/bin/env bash
# Build the microseg image for real and prove that it works (make test-container):
#
#   1. the base: the Dockerfile's pinned python:3.11-slim-bookworm if the engine can pull it, else
#      one made from Debian packages by containers/make_base.sh (BASE_IMAGE=NAME skips this);
#   2. the image, with the CPU build of torch by default (TORCH_VARIANT=cuda for PyPI's CUDA one);
#   3. notebooks 01 -> 02 -> 05 -> 07 headless in quick mode through run.sh --papermill, as the
#      image's non-root user, a data folder mounted read-only at /data and a results folder
#      read-write at /results; their summary.json and environment.json files are checked;
#   4. JupyterLab started by run.sh: the health check turns healthy, a write into /data is refused,
#      and a real browser on this machine (Playwright + Chromium) runs notebook 01 in it.
#
# Everything goes to build/test-container/ (log.txt, summary.json, the screenshot); the data and
# results folders there are made afresh on every run. Needs Docker or Podman, and the project's
# virtual environment (.venv, `make` makes it) for the test data and the browser.
#   PYTHON     the environment's python (default: .venv/bin/python)
#   WORK       the working folder (default: build/test-container)
#   BASE_IMAGE, TORCH_VARIANT, ENGINE as for containers/build.sh
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo_root/.venv/bin/python}
work=${WORK:-$repo_root/build/test-container}
torch=${TORCH_VARIANT:-cpu}
container_name=microseg-test-$$
run_dir=runs/container-test

die() {
    echo "error: $*" >&2
    exit 1
}

say() {
    echo "[$(date +%H:%M:%S)] $*"
}

cleanup() {
    [[ -z ${engine:-} ]] || "$engine" stop --time 10 "$container_name" >/dev/null 2>&1 || true
}

# The pinned base when it can be pulled; else one made here from Debian packages, with this
# machine's CPython 3.11 when it is not Debian's own (the lock needs a later 3.11 than bookworm's).
choose_base() {
    if [[ -n ${BASE_IMAGE:-} ]]; then
        base=$BASE_IMAGE
        return 0
    fi
    local pinned
    pinned=$(sed -n 's/^ARG BASE_IMAGE=//p' "$repo_root/containers/Dockerfile")
    if "$engine" image inspect "$pinned" >/dev/null 2>&1 || timeout 300 "$engine" pull "$pinned" >/dev/null 2>&1; then
        base=""
        say "base: the pinned $pinned"
        return 0
    fi
    say "base: $pinned cannot be pulled here; making one from Debian packages"
    local prefix version options=()
    prefix=$("$python" -c 'import sys; print(sys.base_prefix)')
    version=$("$python" -c 'import platform; print(platform.python_version())')
    if [[ $prefix == /usr ]]; then
        version=3.11.2
    else
        options=(--python "$prefix")
    fi
    base=localhost/microseg-base:python$version-bookworm
    if "$engine" image inspect "$base" >/dev/null 2>&1; then
        say "base: reusing $base, made earlier"
    else
        ENGINE=$engine sh "$repo_root/containers/make_base.sh" "${options[@]}"
    fi
}

# For the CPU variant: the torch+cpu wheel of the locked version that pip on this machine finds
# (PIP_FIND_LINKS or pip's find-links setting), put into containers/wheels/ for the build.
provide_cpu_wheel() {
    [[ $torch == cpu ]] || return 0
    local version wheels=$repo_root/containers/wheels folder wheel
    version=$(sed -n 's/^torch==//p' "$repo_root/containers/requirements.lock")
    compgen -G "$wheels/torch-$version+cpu-*.whl" >/dev/null && return 0
    for folder in ${PIP_FIND_LINKS:-} $("$python" -m pip config get global.find-links 2>/dev/null || true); do
        for wheel in "$folder"/torch-"$version"+cpu-cp311-*.whl; do
            [[ -f $wheel ]] || continue
            ln -f "$wheel" "$wheels/" 2>/dev/null || cp "$wheel" "$wheels/"
            say "torch: $wheel into containers/wheels/"
            return 0
        done
    done
    say "torch: no local torch $version+cpu wheel; the build takes it from the CPU index"
}

build_image() {
    local options=(--torch "$torch")
    [[ -z $base ]] || options+=(--base "$base")
    # A network that inspects TLS: pip in the build needs this machine's certificate authorities.
    if [[ $engine == podman && -f /etc/ssl/certs/ca-certificates.crt ]]; then
        options+=(--host-certs)
    fi
    local start=$SECONDS
    image=$(ENGINE=$engine nice -n 10 bash "$repo_root/containers/build.sh" "${options[@]}" | tail -n 1)
    build_seconds=$((SECONDS - start))
    image_id=$("$engine" image inspect --format '{{.Id}}' "$image")
    image_bytes=$("$engine" image inspect --format '{{.Size}}' "$image")
    say "image: $image ($image_id), $((image_bytes / 1000000)) MB, built in $build_seconds s"
}

make_folders() {
    rm -rf "$work/data" "$work/results"
    mkdir -p "$work/results"
    "$python" -c 'import sys
from microseg.data.synthetic import write_synthetic_dataset
write_synthetic_dataset(sys.argv[1], n_images=10, shape=(128, 128), seed=3)' "$work/data"
    chmod -R a+rX "$work/data"
    data_listing=$(cd "$work/data" && find . -type f -exec sha256sum {} + | sort)
}

run_notebook() {
    local notebook=$1
    shift
    local start=$SECONDS
    bash "$repo_root/containers/run.sh" --no-build --image "$image" --results "$work/results" \
        "$work/data" --papermill "$notebook" -p quick True -p run_dir "$run_dir" "$@" \
        > "$work/$notebook.log" 2>&1 || die "$notebook failed in the container; see $work/$notebook.log"
    notebook_seconds+=("seconds_$notebook=$((SECONDS - start))")
    say "$notebook: done in $((SECONDS - start)) s"
}

run_notebooks() {
    notebook_seconds=()
    run_notebook 01_prepare_data -p data_dir /data
    run_notebook 02_train_from_scratch
    run_notebook 05_evaluate
    run_notebook 07_deploy -p input_path /data/images
    [[ $(cd "$work/data" && find . -type f -exec sha256sum {} + | sort) == "$data_listing" ]] \
        || die "the data folder changed while the notebooks ran"
}

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_lab() {
    port=$(free_port)
    token=$("$python" -c 'import secrets; print(secrets.token_urlsafe(16))')
    MICROSEG_TOKEN=$token bash "$repo_root/containers/run.sh" --no-build --image "$image" \
        --results "$work/results" --name "$container_name" --port "$port" "$work/data" \
        > "$work/lab.log" 2>&1 &
    local waited
    for waited in $(seq 1 180); do
        curl -fsS "http://127.0.0.1:$port/api" >/dev/null 2>&1 && break
        [[ $waited -lt 180 ]] || die "JupyterLab did not answer on port $port within 180 s; see $work/lab.log"
        sleep 1
    done
    say "lab: JupyterLab answers on http://127.0.0.1:$port after about $waited s"
}

health_status() {
    "$engine" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Healthcheck.Status}}{{end}}' \
        "$container_name" 2>/dev/null
}

# Docker runs the image's HEALTHCHECK on its own; Podman without systemd needs it run by hand.
wait_healthy() {
    local waited
    for waited in $(seq 1 24); do
        [[ $engine != podman ]] || "$engine" healthcheck run "$container_name" >/dev/null 2>&1 || true
        health=$(health_status)
        [[ $health != healthy ]] || break
        sleep 5
    done
    [[ $health == healthy ]] || die "the container's health check says '$health', not healthy"
    say "health: $health"
}

check_mounts() {
    local answer
    if answer=$("$engine" exec "$container_name" sh -c 'echo probe > /data/probe' 2>&1); then
        die "a write into /data succeeded; the data folder must be mounted read-only"
    fi
    [[ $answer == *"Read-only file system"* ]] || die "a write into /data failed, but not as read-only: $answer"
    [[ ! -e $work/data/probe ]] || die "a file appeared in the data folder"
    container_user=$("$engine" exec "$container_name" id -u)
    [[ $container_user != 0 ]] || die "the container runs as root"
    "$engine" exec "$container_name" sh -c 'touch /results/probe && rm /results/probe' \
        || die "the container cannot write to /results"
    say "mounts: /data refuses writes ($answer); the container runs as user $container_user and writes /results"
}

run_browser() {
    MICROSEG_LAB_URL=http://127.0.0.1:$port MICROSEG_LAB_TOKEN=$token \
        MICROSEG_LAB_RESULTS=$work/results MICROSEG_LAB_DATA=$work/data MICROSEG_LAB_IMAGE=$image \
        MICROSEG_SCREENSHOT_DIR=$work \
        "$python" -m pytest "$repo_root/tests/test_container_browser.py" -m container \
        -p no:cacheprovider -q > "$work/browser.log" 2>&1 \
        || { tail -n 30 "$work/browser.log" >&2; die "the browser test failed; see $work/browser.log"; }
    say "browser: $(tail -n 1 "$work/browser.log")"
}

check_records() {
    "$python" "$repo_root/containers/check_results.py" --run-dir "$work/results/notebooks/$run_dir" \
        --image "$image" --image-id "$image_id" --base "${base:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$repo_root/containers/Dockerfile")}" \
        --torch "$torch" --data "$work/data" --out "$work/summary.json" \
        --set engine="$("$engine" --version)" build_seconds="$build_seconds" image_bytes="$image_bytes" \
        health="$health" "${notebook_seconds[@]}" screenshot="$work/01_prepare_data.png"
}

main() {
    [[ -x $python ]] || die "$python not found: run 'make' (or set PYTHON) for the test data and the browser"
    mkdir -p "$work"
    exec > >(tee "$work/log.txt") 2>&1
    say "microseg container test, $(date -u +%Y-%m-%dT%H:%MZ), torch variant $torch"
    engine=$(sh "$repo_root/containers/engine.sh")
    say "engine: $("$engine" --version)"
    trap cleanup EXIT
    choose_base
    provide_cpu_wheel
    build_image
    make_folders
    run_notebooks
    start_lab
    wait_healthy
    check_mounts
    run_browser
    check_records
    say "all checks passed; summary in $work/summary.json"
}

main "$@"
