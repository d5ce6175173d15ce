"""The README's headless commands: every parameter they pass is declared, and the papermill
commands run exactly as printed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from microseg.notebook.chain import list_notebooks
from microseg.notebook.parameters import NOTEBOOK_PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "containers" / "README.md"]


def shell_commands(text: str) -> list[str]:
    """Every command line of the ```bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()]
    return commands


def inline_commands(text: str) -> list[str]:
    """Commands quoted inline (`...`) that pass notebook parameters."""
    return [c for c in re.findall(r"`([^`\n]+)`", text) if " -p " in c and "papermill" in c]


def notebooks_and_parameters(command: str) -> tuple[list[str], list[str]] | None:
    """(notebook stems, names given with -p) of a papermill or ``microseg run`` command."""
    words = shlex.split(command)
    stems = [p.stem for p in list_notebooks()]
    if "papermill" in " ".join(words):
        named = [s for w in words for s in stems if Path(w).stem == s or w == s]
    elif "-m microseg run " in command:
        start = words.index("run") + 1
        named = [s for w in words[start:] if not w.startswith("-") for s in stems
                 if s.split("_")[0] == w or s == w or w == "all"]
    else:
        return None
    given = [words[k + 1] for k, w in enumerate(words[:-1]) if w in ("-p", "--parameter")]
    return named, given


def documented_commands() -> list[str]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        found += [c for c in shell_commands(text) + inline_commands(text)
                  if notebooks_and_parameters(c) is not None]
    return found


def test_the_readmes_show_headless_commands():
    commands = documented_commands()
    assert sum("papermill" in c for c in commands) >= 5
    assert any("microseg run" in c for c in commands)


@pytest.mark.parametrize("command", documented_commands())
def test_every_parameter_a_documented_command_passes_is_declared(command):
    notebooks, given = notebooks_and_parameters(command)
    assert notebooks, f"no notebook named in {command!r}"
    declared = {name for stem in notebooks for name in NOTEBOOK_PARAMETERS[stem]}
    unknown = [name for name in given if name not in declared]
    assert not unknown, f"{command!r} passes {unknown}, which {notebooks} do not declare"


def headless_section() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Headless with papermill"):]
    section = section[:section.index("\n## ", 10)]
    return shell_commands(section.split("microseg's runner")[0])


@pytest.mark.slow
def test_the_headless_papermill_commands_run_as_printed(tmp_path):
    """01 and 07 run exactly as the README prints them, in a folder that holds the README's
    ``my_data`` and ``new_images`` (small synthetic images) beside ``.venv`` and ``notebooks``.
    02 is printed with a 30-minute budget: in its place a tiny model is trained through the
    library into ``runs/exp1/models/unet`` (its parameters are checked above)."""
    import shutil

    from microseg.data.synthetic import write_synthetic_dataset
    from microseg.recipes.train import train_model

    folder, prepare, train, deploy = headless_section()
    assert "01_prepare_data" in prepare and "02_train" in train and "07_deploy" in deploy
    for name in (".venv", "notebooks"):
        (tmp_path / name).symlink_to(ROOT / name)
    write_synthetic_dataset(tmp_path / "my_data", n_images=6, shape=(96, 96), seed=0)
    shutil.copytree(tmp_path / "my_data" / "images", tmp_path / "new_images")
    env = {**os.environ, "MPLBACKEND": "Agg"}

    def run(command):
        done = subprocess.run(command, shell=True, executable="/bin/bash", cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run(folder)
    run(prepare)
    assert (tmp_path / "runs/exp1/data/summary.json").is_file()
    train_model(tmp_path / "runs" / "exp1", "unet", device="cpu", quick=True)
    run(deploy)
    predicted = sorted((tmp_path / "runs/exp1/predictions/unet").rglob("*.tif"))
    assert len(predicted) >= 6, predicted
