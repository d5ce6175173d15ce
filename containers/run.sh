#!/usr/bin/env bash
# Build (or pull) the microseg image and start JupyterLab in it, or run one notebook headless.
# Run containers/run.sh --help for the options. Works with Docker or Podman, on Linux and under
# WSL 2.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<'EOF'
Usage: containers/run.sh [OPTIONS] [DATA_DIR]
       containers/run.sh [OPTIONS] [DATA_DIR] --papermill NOTEBOOK [PAPERMILL_OPTIONS...]

Starts JupyterLab with the microseg notebooks in a container and prints the address to open.
DATA_DIR (optional) is mounted read-only at /data; the results folder is mounted read-write at
/results and holds your copy of the notebooks, the run folders and executed notebooks. The GPU
is used when nvidia-smi finds one. Docker is used when its engine answers, else Podman.

Options:
  --results DIR      results folder on this machine (default: ./results, created if missing)
  --image NAME       image name (default: microseg:VERSION from pyproject.toml)
  --pull IMAGE       pull IMAGE from a registry instead of building it
  --no-build         use the image NAME as it is, without building it
  --name NAME        name of the container (to stop it: docker stop NAME / podman stop NAME)
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

Environment: MICROSEG_TOKEN sets the JupyterLab token (default: a new random one);
ENGINE=docker|podman picks the container engine; BASE_IMAGE and TORCH_VARIANT=cpu go to the build
(see containers/build.sh --help).
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

engine_works() {
    command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1
}

# Docker when its engine answers, else Podman; a docker client without an engine does not count.
choose_engine() {
    if [[ -n ${ENGINE:-} ]]; then
        engine_works "$ENGINE" || die "ENGINE=$ENGINE was asked for, but '$ENGINE info' fails"
        engine=$ENGINE
        return 0
    fi
    for engine in docker podman; do
        engine_works "$engine" && return 0
    done
    command -v docker >/dev/null 2>&1 || die "Docker is not installed (no 'docker' command found), nor Podman.
Install Docker Engine (Linux: https://docs.docker.com/engine/install/) or Docker Desktop
(Windows/WSL 2, macOS: https://docs.docker.com/desktop/), or Podman (apt-get install podman).
On a cluster without either, use Apptainer instead: see containers/README.md."
    local problem
    problem=$(docker info 2>&1 >/dev/null) || true
    if [[ $problem == *"ermission denied"* ]]; then
        die "Docker is not running for you: permission denied on the Docker socket.
Add yourself to the docker group (sudo usermod -aG docker \"\$USER\", then log out and in)."
    fi
    die "Docker is not running (docker info failed: ${problem##*$'\n'}).
Start it: 'sudo systemctl start docker' on Linux, or start Docker Desktop on Windows/macOS
(with WSL integration enabled for this distribution). Podman works too (apt-get install podman)."
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

# Podman reaches the GPU through a CDI specification that the toolkit's nvidia-ctk writes.
podman_has_nvidia_cdi() {
    local spec
    for spec in /etc/cdi/*.yaml /etc/cdi/*.json /var/run/cdi/*.yaml /var/run/cdi/*.json; do
        [[ -f $spec ]] && grep -q nvidia.com/gpu "$spec" && return 0
    done
    return 1
}

add_gpu_option() {
    [[ $use_gpu == yes ]] && nvidia_smi_works || return 0
    local toolkit=https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html
    if [[ $engine == podman ]]; then
        podman_has_nvidia_cdi || die "an NVIDIA GPU was found (nvidia-smi works) but Podman cannot use it:
no CDI specification for it. Install the NVIDIA Container Toolkit ($toolkit),
then run 'sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml'. Or pass --cpu to run without the GPU."
        options+=(--device nvidia.com/gpu=all)
    else
        docker_has_nvidia_toolkit || die "an NVIDIA GPU was found (nvidia-smi works) but Docker cannot use it:
the NVIDIA Container Toolkit is missing. Install it ($toolkit),
then run 'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker'.
Or pass --cpu to run without the GPU."
        options+=(--gpus=all)
    fi
    echo "microseg: using the NVIDIA GPU"
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
        "$engine" pull "$pull_image"
    elif [[ $build == yes ]]; then
        ENGINE=$engine bash "$repo_root/containers/build.sh" --image "$image" >/dev/null
    fi
}

# The record of every run names the exact image: its registry digest when pulled, else its id.
image_digest() {
    if [[ -n $pull_image ]]; then
        "$engine" image inspect --format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}' "$image"
    else
        "$engine" image inspect --format '{{.Id}}' "$image"
    fi
}

parse_args() {
    results_dir=./results
    image=""
    pull_image=""
    build=yes
    name=""
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
            --name) name=${2:?--name needs a name}; shift 2 ;;
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
    results_dir=$(absolute_dir "$results")
    options+=("--volume=$results_dir:/results")
}

# Files written to /results belong to whoever runs this script. Run by root, the container still
# runs as a non-root user: the owner of the results folder, or the image's user (1000) for a new,
# empty folder, which is then given to it.
add_user_options() {
    local uid gid
    uid=$(id -u)
    gid=$(id -g)
    if [[ $uid -eq 0 ]]; then
        uid=$(stat -c %u "$results_dir")
        gid=$(stat -c %g "$results_dir")
        if [[ $uid -eq 0 ]]; then
            [[ -z $(ls -A "$results_dir") ]] || die "the results folder $results_dir belongs to root, and the container runs as a non-root user.
Give it to a user (chown -R 1000:1000 $results_dir) or choose another with --results"
            chown 1000:1000 "$results_dir"
            uid=1000
            gid=1000
        fi
    elif [[ $engine == podman ]]; then
        options+=(--userns=keep-id)  # rootless Podman: the same user id inside as outside
    fi
    options+=(--user "$uid:$gid")
}

main() {
    parse_args "$@"
    choose_engine
    options=(--rm --init)
    [[ -z $name ]] || options+=(--name "$name")
    add_mount_options
    add_user_options
    add_gpu_option
    if [[ -t 0 && -t 1 ]]; then
        options+=(--interactive --tty)
    fi
    prepare_image
    local digest
    digest=$(image_digest 2>/dev/null) || die "there is no image $image: build it (leave out --no-build) or pull one with --pull IMAGE"
    options+=(--env "MICROSEG_IMAGE=$image" --env "MICROSEG_IMAGE_DIGEST=$digest")
    if [[ $mode == papermill ]]; then
        exec "$engine" run "${options[@]}" "$image" papermill "${papermill_args[@]}"
    fi
    [[ -n $port ]] || port=$(free_port)
    local token=${MICROSEG_TOKEN:-$(new_token)}
    echo "microseg: JupyterLab will be at http://$host_ip:$port/lab?token=$token"
    exec "$engine" run "${options[@]}" --publish "$host_ip:$port:8888" --env "MICROSEG_TOKEN=$token" "$image" lab
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
