#!/usr/bin/env bash
# Environments of the peer tools, next to this file, never part of microseg's own environment:
#   .venv-stardist  StarDist 0.9.2 on TensorFlow 2.15 (CPU build, Keras 2)
#   .venv-cellpose  Cellpose 3.1.1.2 on the project's CPU torch 2.13.0
# Usage: bash benchmarks/peers/install.sh [stardist|cellpose]   (default: both)
# Needs python3.11 and the package registry; about 2 GB of disk for both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3.11}"

make_venv() {
    local venv="$here/.venv-$1"
    if [[ -x "$venv/bin/python" ]]; then
        echo "$venv exists; delete it to install again" >&2
        return 1
    fi
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
}

install_stardist() {
    make_venv stardist
    "$here/.venv-stardist/bin/python" -m pip install --quiet \
        "tensorflow-cpu==2.15.1" "stardist==0.9.2" "csbdeep==0.8.2" "numpy<2" tifffile
    "$here/.venv-stardist/bin/python" -m pip check
}

install_cellpose() {
    make_venv cellpose
    # torch first, pinned: otherwise pip resolves a CUDA build of several GB
    "$here/.venv-cellpose/bin/python" -m pip install --quiet "torch==2.13.0"
    "$here/.venv-cellpose/bin/python" -m pip install --quiet "torch==2.13.0" \
        "cellpose==3.1.1.2" tifffile
    "$here/.venv-cellpose/bin/python" -m pip check
}

case "${1:-both}" in
    stardist) install_stardist ;;
    cellpose) install_cellpose ;;
    both) install_stardist; install_cellpose ;;
    *) echo "usage: $0 [stardist|cellpose|both]" >&2; exit 2 ;;
esac
