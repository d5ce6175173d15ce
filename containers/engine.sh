#!/bin/sh
# Print the container engine to use: "docker" when a Docker engine answers, else "podman" when
# Podman works, else explain what to install and fail. ENGINE=docker|podman skips the search.
# A docker command alone (a client without a running engine) does not count.
set -eu

works() {
    command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1
}

if [ -n "${ENGINE:-}" ]; then
    works "$ENGINE" || {
        echo "error: ENGINE=$ENGINE was asked for, but '$ENGINE info' fails; start it or unset ENGINE" >&2
        exit 1
    }
    echo "$ENGINE"
elif works docker; then
    echo docker
elif works podman; then
    echo podman
else
    cat >&2 <<'EOF'
error: no working container engine: neither 'docker info' nor 'podman info' succeeds.
Install Docker Engine (https://docs.docker.com/engine/install/) and start it, or install Podman
(Debian/Ubuntu: apt-get install podman). See containers/README.md.
EOF
    exit 1
fi
