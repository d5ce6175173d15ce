#!/bin/sh
# The one place that installs microseg's environment. containers/Dockerfile, containers/microseg.def
# and tests/test_container.py all call it, so the image and the test install the same way.
#
#   install.sh dependencies VENV LOCK   create the virtual environment VENV with exactly the pins in LOCK
#   install.sh library VENV SOURCE      install the library from the folder SOURCE into VENV (no
#                                       dependencies: the lock has them all) and register its kernel
#
# PYTHON names the interpreter that creates the environment (default: python3).
set -eu

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
        "$venv/bin/python" -m pip install --no-cache-dir -r "$target"
        "$venv/bin/python" -m pip check
        ;;
    library)
        "$venv/bin/python" -m pip install --no-cache-dir --no-deps --no-build-isolation -e "$target"
        "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
        ;;
    *)
        usage
        ;;
esac
