#!/bin/sh
# The one place that installs microseg's environment. containers/Dockerfile, containers/microseg.def
# and tests/test_container.py all call it, so the image and the test install the same way.
#
#   install.sh dependencies VENV LOCK   create the virtual environment VENV with exactly the pins in LOCK
#   install.sh library VENV SOURCE      install the library from the folder SOURCE into VENV (no
#                                       dependencies: the lock has them all), register its kernel
#                                       and turn off JupyterLab's news announcements
#
# PYTHON names the interpreter that creates the environment (default: python3).
# TORCH_VARIANT=cpu installs the CPU-only build of the lock's torch version first (so the lock's
# torch pin is then already met): offline from a torch wheel in the folder WHEELS when there is
# one, else from the index TORCH_CPU_INDEX. Any other value (default: cuda) takes torch from PyPI
# like every other package, which on Linux x86_64 is the CUDA build.
set -eu

# The CPU build of the locked torch version; its dependencies come from the lock afterwards.
install_cpu_torch() {
    pin=$(grep -E '^torch==' "$target") || {
        echo "error: $target has no torch== line; regenerate it with 'make lock'" >&2
        exit 1
    }
    version=${pin#torch==}
    if ls "${WHEELS:-/nonexistent}"/torch-"$version"+cpu-*.whl >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install --no-cache-dir --no-deps --no-index \
            --find-links "$WHEELS" "torch==$version+cpu"
    else
        "$venv/bin/python" -m pip install --no-cache-dir --no-deps \
            --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" "torch==$version+cpu"
    fi
}

usage() {
    echo "usage: $0 dependencies VENV LOCK | $0 library VENV SOURCE" >&2
    exit 2
}

[ $# -eq 3 ] || usage
step=$1
venv=$2
target=$3

case "$step" in
    dependencies)
        "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --no-cache-dir --upgrade "pip>=24"
        [ "${TORCH_VARIANT:-cuda}" != cpu ] || install_cpu_torch
        "$venv/bin/python" -m pip install --no-cache-dir -r "$target"
        "$venv/bin/python" -m pip check
        ;;
    library)
        "$venv/bin/python" -m pip install --no-cache-dir --no-deps --no-build-isolation -e "$target"
        "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
        # No "get notified about Jupyter news?" prompt, and no news fetched from the internet.
        "$venv/bin/jupyter" labextension disable "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1
        ;;
    *)
        usage
        ;;
esac
