#!/usr/bin/env bash
# Build (or pull) the microseg image and start JupyterLab in it, or run one notebook headless.
# Run containers/run.sh --help for the options. Works on Linux and under WSL 2.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<'EOF'
Usage: containers/run.sh [OPTIONS] [DATA_DIR]
       containers/run.sh [OPTIONS] [DATA_DIR] --papermill NOTEBOOK [PAPERMILL_OPTIONS...]

Starts JupyterLab with the microseg notebooks in a container and prints the address to open.
DATA_DIR (optional) is mounted read-only at /data; the results folder is mounted read-write at
/results and holds your copy of the notebooks, the run folders and executed notebooks. The GPU
is used when nvidia-smi finds one.

Options:
  --results DIR      results folder on this machine (default: ./results, created if missing)
  --image NAME       image name (default: microseg:VERSION from pyproject.toml)
  --pull IMAGE       pull IMAGE from a registry instead of building it
  --no-build         use the image NAME as it is, without building it
  --port N           port on this machine (default: the first free port from 8888)
  --host-ip ADDR     address to publish the port on (default: 127.0.0.1, this machine only)
  --cpu              do not use a GPU even if there is one
  --papermill NB ... run notebook NB headless: a shipped notebook's name (01_prepare_data) or
                     a path inside the container (/results/notebooks/01_prepare_data.ipynb,
                     your edited copy); everything after NB goes to papermill, e.g. -p quick True.
                     The executed copy lands in RESULTS/executed/.
  -h, --help         show this help

Examples:
  containers/run.sh ~/data/nuclei
  containers/run.sh --results ~/microseg-results ~/data/nuclei
  containers/run.sh --papermill 01_prepare_data -p quick True
  containers/run.sh --pull ghcr.io/microseg/microseg:0.1.0 /mnt/c/Users/me/images

Environment: MICROSEG_TOKEN sets the JupyterLab token (default: a new random one).
EOF
}

die() {
    echo "error: $*" >&2
    exit 1
}

is_wsl() {
    grep -qi microsoft /proc/version 2>/dev/null
}

# Windows paths (C:\data, C:/data) become /mnt/c/data under WSL; other paths are kept.
host_path() {
    local path=$1
    if is_wsl && [[ $path =~ ^[A-Za-z]:[\\/] || $path == \\\\* ]]; then
        wslpath -u "$path"
    else
        echo "$path"
    fi
}

absolute_dir() {
    (cd "$1" && pwd)
}

require_docker() {
    command -v docker >/dev/null 2>&1 || die "Docker is not installed (no 'docker' command found).
Install Docker Engine (Linux: https://docs.docker.com/engine/install/) or Docker Desktop
(Windows/WSL 2, macOS: https://docs.docker.com/desktop/). On a cluster without Docker, use
Apptainer instead: see containers/README.md."
    local problem
    if ! problem=$(docker info 2>&1 >/dev/null); then
        if [[ $problem == *"ermission denied"* ]]; then
            die "Docker is not running for you: permission denied on the Docker socket.
Add yourself to the docker group (sudo usermod -aG docker \"\$USER\", then log out and in)."
        fi
        die "Docker is not running (docker info failed: ${problem##*$'\n'}).
Start it: 'sudo systemctl start docker' on Linux, or start Docker Desktop on Windows/macOS
(with WSL integration enabled for this distribution)."
    fi
}

nvidia_smi_works() {
    local smi
    for smi in nvidia-smi /usr/lib/wsl/lib/nvidia-smi; do
        if command -v "$smi" >/dev/null 2>&1 && "$smi" -L >/dev/null 2>&1; then
            return 0
        fi
    done
    return 1
}

# Docker reaches the GPU through the NVIDIA Container Toolkit (a registered "nvidia" runtime or
# its prestart hook); Docker Desktop under WSL 2 brings its own GPU support.
docker_has_nvidia_toolkit() {
    is_wsl && return 0
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia && return 0
    command -v nvidia-container-runtime-hook >/dev/null 2>&1
}

add_gpu_option() {
    [[ $use_gpu == yes ]] && nvidia_smi_works || return 0
    docker_has_nvidia_toolkit || die "an NVIDIA GPU was found (nvidia-smi works) but Docker cannot use it:
the NVIDIA Container Toolkit is missing. Install it
(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html),
then run 'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker'.
Or pass --cpu to run without the GPU."
    echo "microseg: using the NVIDIA GPU"
    options+=(--gpus=all)
}

port_is_free() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)' "$host_ip" "$1"
    elif command -v ss >/dev/null 2>&1; then
        [[ -z $(ss -Htln "sport = :$1") ]]
    elif nc -z 127.0.0.1 "$1" >/dev/null 2>&1; then
        return 1
    fi
}

free_port() {
    local port
    for port in $(seq 8888 8988); do
        if port_is_free "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port between 8888 and 8988; pass one with --port"
}

new_token() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import secrets; print(secrets.token_urlsafe(24))'
    else
        od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
    fi
}

project_version() {
    sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_root/pyproject.toml" | head -n 1
}

prepare_image() {
    if [[ -n $pull_image ]]; then
        docker pull "$pull_image"
    elif [[ $build == yes ]]; then
        docker build --tag "$image" --file "$repo_root/containers/Dockerfile" "$repo_root"
    fi
}

# The record of every run names the exact image: its registry digest when pulled, else its id.
image_digest() {
    docker image inspect --format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}' "$image"
}

parse_args() {
    results_dir=./results
    image=""
    pull_image=""
    build=yes
    port=""
    host_ip=127.0.0.1
    use_gpu=yes
    data_dir=""
    papermill_args=()
    mode=lab
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --results) results_dir=${2:?--results needs a folder}; shift 2 ;;
            --image) image=${2:?--image needs a name}; shift 2 ;;
            --pull) pull_image=${2:?--pull needs an image name}; shift 2 ;;
            --no-build) build=no; shift ;;
            --port) port=${2:?--port needs a number}; shift 2 ;;
            --host-ip) host_ip=${2:?--host-ip needs an address}; shift 2 ;;
            --cpu) use_gpu=no; shift ;;
            --papermill)
                [[ $# -ge 2 ]] || die "--papermill needs a notebook, e.g. --papermill 01_prepare_data"
                mode=papermill
                shift
                papermill_args=("$@")
                break
                ;;
            -*) die "unknown option $1 (see --help)" ;;
            *)
                [[ -z $data_dir ]] || die "only one DATA_DIR may be given (got $data_dir and $1)"
                data_dir=$1
                shift
                ;;
        esac
    done
    [[ -n $image ]] || image=${pull_image:-microseg:$(project_version)}
}

add_mount_options() {
    if [[ -n $data_dir ]]; then
        local data
        data=$(host_path "$data_dir")
        [[ -d $data ]] || die "data folder $data does not exist; give the folder that holds images/ and labels/"
        options+=("--volume=$(absolute_dir "$data"):/data:ro")
    fi
    local results
    results=$(host_path "$results_dir")
    mkdir -p "$results" || die "cannot create the results folder $results; choose another with --results"
    options+=("--volume=$(absolute_dir "$results"):/results")
}

main() {
    parse_args "$@"
    require_docker
    options=(--rm --init)
    add_mount_options
    add_gpu_option
    # Files written to /results then belong to the user who ran this script.
    if [[ $(id -u) -ne 0 ]]; then
        options+=(--user "$(id -u):$(id -g)")
    fi
    if [[ -t 0 && -t 1 ]]; then
        options+=(--interactive --tty)
    fi
    prepare_image
    local digest
    digest=$(image_digest 2>/dev/null) || die "there is no image $image: build it (leave out --no-build) or pull one with --pull IMAGE"
    options+=(--env "MICROSEG_IMAGE=$image" --env "MICROSEG_IMAGE_DIGEST=$digest")
    if [[ $mode == papermill ]]; then
        exec docker run "${options[@]}" "$image" papermill "${papermill_args[@]}"
    fi
    [[ -n $port ]] || port=$(free_port)
    local token=${MICROSEG_TOKEN:-$(new_token)}
    echo "microseg: JupyterLab will be at http://$host_ip:$port/lab?token=$token"
    exec docker run "${options[@]}" --publish "$host_ip:$port:8888" --env "MICROSEG_TOKEN=$token" "$image" lab
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
