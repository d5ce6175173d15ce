"""One set of pins everywhere: the lock, pyproject, conda, Binder, the container and this venv agree."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "containers" / "requirements.lock"
TORCH = "2.13.0"
# Installed by the venv tooling or as the project itself, never pinned in the lock.
NOT_LOCKED = {"pip", "microseg"}


def lock_lines() -> list[str]:
    lines = (line.strip() for line in LOCK.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def locked_versions() -> dict[str, Version]:
    return {canonicalize_name(r.name): Version(str(r.specifier)[2:]) for r in map(Requirement, lock_lines())}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# Optional vendor-file readers (bioio plugins): installed on request, not in the container,
# so not in the lock either.
UNLOCKED_EXTRAS = frozenset({"formats"})


def project_requirements() -> list[Requirement]:
    """Every requirement of the project and of its locked extras, without self-references."""
    project = pyproject()["project"]
    strings = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if name not in UNLOCKED_EXTRAS:
            strings += extra
    return [r for r in map(Requirement, strings) if canonicalize_name(r.name) != "microseg"]


def test_lock_pins_exact_versions_once_each():
    requirements = [Requirement(line) for line in lock_lines()]
    for requirement in requirements:
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{LOCK}: {requirement} is not an exact pin"
        assert not requirement.marker and not requirement.extras, f"{LOCK}: {requirement} must be a plain pin"
    counts = Counter(canonicalize_name(r.name) for r in requirements)
    assert [name for name, n in counts.items() if n > 1] == []


def test_lock_pins_torch_without_local_label():
    assert locked_versions()["torch"] == Version(TORCH)
    assert f"torch=={TORCH}" in lock_lines()


def test_pyproject_ranges_admit_the_locked_versions():
    locked = locked_versions()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"pyproject.toml needs {requirement}, which {LOCK} does not pin"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{LOCK} pins {name}=={locked[name]}, outside pyproject.toml's {requirement}"
        )


def test_pyproject_pins_torch_exactly():
    torch = [r for r in project_requirements() if r.name == "torch"]
    assert [str(r.specifier) for r in torch] == [f"=={TORCH}"]


def _requirements_of(name: str, extra: str) -> list[Requirement]:
    environment = {**default_environment(), "extra": extra}
    found = []
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            found.append(requirement)
    return found


def test_lock_holds_every_transitive_dependency_in_a_compatible_version():
    """Walk the installed dependency tree from pyproject (all extras) and check each edge."""
    locked = locked_versions()
    todo = [(r, "") for r in project_requirements()]
    seen: set[tuple[str, str]] = set()
    problems = []
    while todo:
        requirement, parent = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{parent or 'pyproject.toml'} needs {requirement}: not in the lock")
            continue
        if not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{parent or 'pyproject.toml'} needs {requirement}: lock has {locked[name]}")
        for extra in {""} | requirement.extras:
            if (name, extra) not in seen:
                seen.add((name, extra))
                todo += [(r, name) for r in _requirements_of(name, extra)]
    assert problems == [], "\n".join(problems)
    assert len(seen) > 50  # the walk really followed the installed metadata


def test_installed_environment_matches_the_lock():
    locked = locked_versions()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}
    missing = sorted(set(locked) - set(installed))
    different = sorted(f"{n}: lock {v}, installed {installed[n]}" for n, v in locked.items()
                       if n in installed and Version(installed[n].public) != v)
    unlocked = sorted(set(installed) - set(locked) - NOT_LOCKED)
    assert (missing, different, unlocked) == ([], [], []), (
        "the environment differs from containers/requirements.lock: reinstall it with "
        "'make clean-venv test', or add new dependencies to pyproject.toml and run 'make lock'"
    )


def test_lock_header_says_how_to_regenerate_it():
    header = LOCK.read_text().splitlines()[:3]
    assert all(line.startswith("#") for line in header)
    assert "make lock" in "\n".join(header)


def test_environment_yml_installs_the_lock_then_the_library():
    import yaml

    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    dependencies = environment["dependencies"]
    assert "python=3.11" in dependencies
    pip_section = next(d["pip"] for d in dependencies if isinstance(d, dict))
    assert pip_section == ["-r containers/requirements.lock", "-e ."]
    assert (ROOT / "containers" / "requirements.lock").is_file()  # path relative to environment.yml


def test_binder_installs_the_lock_on_python_311():
    binder = ROOT / "binder"
    lines = [line.strip() for line in (binder / "requirements.txt").read_text().splitlines()]
    assert "-r ../containers/requirements.lock" in lines
    assert (binder / "../containers/requirements.lock").resolve() == LOCK
    others = [line for line in lines if line and not line.startswith(("#", "-r", "--extra-index-url"))]
    assert others == [], "binder/requirements.txt must take every version from the lock"
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = (binder / "postBuild").read_text()
    assert "--no-deps" in post_build and "-e ." in post_build


def test_container_definitions_install_the_lock_with_the_shared_script():
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    apptainer = (ROOT / "containers" / "microseg.def").read_text()
    install = (ROOT / "containers" / "install.sh").read_text()
    assert "install.sh dependencies /opt/venv /build/requirements.lock" in dockerfile
    assert "COPY containers/install.sh containers/requirements.lock /build/" in dockerfile
    assert "install.sh dependencies /opt/venv /opt/microseg/containers/requirements.lock" in apptainer
    assert "containers/requirements.lock /opt/microseg/containers/requirements.lock" in apptainer
    assert 'pip install --no-cache-dir -r "$target"' in install
    assert "--no-deps" in install


def _base_image_digest(text: str) -> str:
    return re.search(r"python(?::[\w.-]+)?@(sha256:[0-9a-f]{64})", text).group(1)


def test_docker_and_apptainer_share_the_base_image_digest():
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    apptainer = (ROOT / "containers" / "microseg.def").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:" in dockerfile
    assert _base_image_digest(dockerfile) == _base_image_digest(apptainer)


def test_image_versions_follow_pyproject():
    version = pyproject()["project"]["version"]
    dockerfile = (ROOT / "containers" / "Dockerfile").read_text()
    apptainer = (ROOT / "containers" / "microseg.def").read_text()
    assert f"ARG MICROSEG_VERSION={version}\n" in dockerfile
    assert f"org.opencontainers.image.version {version}\n" in apptainer
    assert f"MICROSEG_IMAGE=microseg:{version}-apptainer" in apptainer


# Files that install torch themselves must pin it; the others install from the lock and must
# not name another version.
PINS_TORCH = ("Makefile", "pyproject.toml", "containers/requirements.lock",
              "binder/requirements.txt", "containers/Dockerfile")


def torch_versions(text: str) -> list[str]:
    return re.findall(r"\btorch\s*(?:==|>=|<=|~=|>|<)\s*([0-9][\w.+]*)", text)


@pytest.mark.parametrize("path", [*PINS_TORCH, "environment.yml", "containers/microseg.def"])
def test_every_mention_of_a_torch_version_is_the_pinned_one(path):
    versions = torch_versions((ROOT / path).read_text())
    assert all(v == TORCH for v in versions), f"{path} names torch {versions}, expected {TORCH}"
    if path in PINS_TORCH:
        assert versions, f"{path} installs torch but pins no version: pin torch=={TORCH}"


def test_a_pin_file_without_a_torch_version_is_caught():
    assert torch_versions("numpy==2.4.6\nmonai==1.6.1\n") == []
    assert torch_versions("torch==2.13.0\n") == [TORCH]
