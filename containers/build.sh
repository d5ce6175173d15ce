#!/usr/bin/env bash
# Build the microseg image with Docker or Podman (whichever works; ENGINE=docker|podman to choose).
# Run containers/build.sh --help for the options; `make image` calls it.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<'EOF'
Usage: containers/build.sh [OPTIONS] [-- ENGINE_BUILD_OPTIONS...]

Builds the microseg image from containers/Dockerfile and prints its name on the last line.

Options:
  --image NAME       image name (default: microseg:VERSION, or microseg:VERSION-cpu for --torch cpu)
  --base IMAGE       base image (default: the Dockerfile's python:3.11-slim-bookworm pinned by
                     digest); where registries cannot be reached, make one from Debian packages
                     with containers/make_base.sh and pass its name here
  --torch VARIANT    cuda (default: PyPI's torch, with the CUDA libraries) or cpu (the CPU-only
                     build: a torch+cpu wheel in containers/wheels/, else PyTorch's CPU index)
  --host-certs       (Podman) mount this machine's /etc/ssl/certs into the build and point pip at
                     its bundle: for networks that inspect TLS with their own certificate authority
  -h, --help         show this help
Anything after -- goes to 'docker build' / 'podman build' as it is.

Environment: ENGINE=docker|podman picks the engine; BASE_IMAGE, TORCH_VARIANT and IMAGE are read
as defaults for --base, --torch and --image, HOST_CERTS=1 as --host-certs (make image HOST_CERTS=1).
EOF
}

die() {
    echo "error: $*" >&2
    exit 1
}

project_version() {
    sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_root/pyproject.toml" | head -n 1
}

# The commit the image is built from, marked -dirty when the working tree differs from it.
source_revision() {
    local revision
    revision=$(git -C "$repo_root" rev-parse HEAD 2>/dev/null) || return 0
    git -C "$repo_root" diff --quiet HEAD -- lib notebooks containers pyproject.toml 2>/dev/null \
        || revision="$revision-dirty"
    echo "$revision"
}

parse_args() {
    image=${IMAGE:-}
    base=${BASE_IMAGE:-}
    torch=${TORCH_VARIANT:-cuda}
    host_certs=no
    [[ ${HOST_CERTS:-} != 1 ]] || host_certs=yes
    extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --image) image=${2:?--image needs a name}; shift 2 ;;
            --base) base=${2:?--base needs an image}; shift 2 ;;
            --torch) torch=${2:?--torch needs cuda or cpu}; shift 2 ;;
            --host-certs) host_certs=yes; shift ;;
            --) shift; extra=("$@"); break ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
    done
    [[ $torch == cuda || $torch == cpu ]] || die "--torch must be cuda or cpu (got $torch)"
    local suffix=""
    [[ $torch == cuda ]] || suffix=-$torch
    [[ -n $image ]] || image=microseg:$(project_version)$suffix
}

main() {
    parse_args "$@"
    local engine
    engine=$(sh "$repo_root/containers/engine.sh")
    local options=(--tag "$image" --file "$repo_root/containers/Dockerfile"
                   --build-arg "TORCH_VARIANT=$torch" --build-arg "MICROSEG_IMAGE=$image")
    [[ -z $base ]] || options+=(--build-arg "BASE_IMAGE=$base")
    local revision
    revision=$(source_revision)
    [[ -z $revision ]] || options+=(--build-arg "MICROSEG_REVISION=$revision")
    # Podman writes OCI images by default, which have no HEALTHCHECK; the Docker format keeps it.
    [[ $engine != podman ]] || options+=(--format docker)
    if [[ $host_certs == yes ]]; then
        [[ $engine == podman ]] || die "--host-certs needs Podman (docker build cannot mount folders)"
        options+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro
                  --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    fi
    local base_name=${base:-"the pinned python:3.11-slim-bookworm"}
    echo "microseg: $engine build of $image (torch: $torch, base: $base_name)" >&2
    "$engine" build "${options[@]}" "${extra[@]}" "$repo_root" >&2
    echo "$image"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
