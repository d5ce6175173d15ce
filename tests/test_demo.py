"""make demo: a fresh run folder, the demo budget passed as given parameters, a verdict per model."""

from __future__ import annotations

import pytest

from microseg.notebook import demo
from microseg.notebook.chain import NotebookRun, check_chain_parameters, list_notebooks
from microseg.notebook.parameters import NOTEBOOK_PARAMETERS


def test_the_demo_budget_only_shortens_trainings_of_notebooks_that_declare_it():
    by_stem = {p.stem: p for p in list_notebooks()}
    for stem, parameters in demo.DEMO_BUDGET.items():
        check_chain_parameters([by_stem[stem]], parameters)
        for name, value in parameters.items():
            default = NOTEBOOK_PARAMETERS[stem][name]
            assert default is None or value < default, f"{stem}: {name} is not a shorter budget"


@pytest.mark.parametrize(("flags", "budget"), [([], True), (["--full"], False),
                                               (["--quick"], False)])
def test_the_demo_passes_its_budget_and_ends_with_verdicts(tmp_path, monkeypatch, capsys,
                                                           flags, budget):
    calls = []

    def fake_chain(run_dir, quick, parameters, per_notebook):
        calls.append((run_dir, quick, parameters, per_notebook))
        run_dir.mkdir(parents=True)
        return [NotebookRun("01_prepare_data", run_dir / "x.ipynb", 1.0)]

    monkeypatch.setattr(demo, "run_chain", fake_chain)
    monkeypatch.setattr(demo, "model_verdicts", lambda report: ["unet (from scratch): F1 0.9"])
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "old").write_text("an earlier demo")
    assert demo.main(["--run-dir", str(tmp_path / "demo"), *flags]) == 0
    (run_dir, quick, parameters, per_notebook), = calls
    assert run_dir == tmp_path / "demo-2", "an earlier demo is never written over"
    assert quick is ("--quick" in flags) and parameters == {"ndim": 2}
    assert per_notebook == (demo.DEMO_BUDGET if budget else {})
    out = capsys.readouterr().out
    assert ("demo budget" in out) is budget
    assert "  unet (from scratch): F1 0.9" in out and str(run_dir.resolve() / "index.html") in out
