import json

import pytest

from microseg.widgets import parameter_form, saved_form_values


def _widgets(form):
    out = []
    for child in form.children[1:]:
        out.append(getattr(child, "value_widget", child))
    return out


def test_form_writes_into_the_namespace_and_the_run(tmp_path):
    ns = {"ndim": 2, "seed": 0, "quick": False, "data_dir": None, "lr": 1e-3}
    form = parameter_form(ns, {"ndim": [2, 3], "seed": (0, 100), "quick": bool,
                               "data_dir": "folder", "lr": float},
                          run_dir=tmp_path, name="01_prepare_data")
    ndim, seed, quick, folder, lr = _widgets(form)
    assert type(ndim).__name__ == "Dropdown" and type(seed).__name__ == "IntSlider"
    assert type(quick).__name__ == "Checkbox" and type(lr).__name__ == "FloatText"
    ndim.value, seed.value, quick.value = 3, 42, True
    folder.value = str(tmp_path)
    assert ns == {"ndim": 3, "seed": 42, "quick": True, "data_dir": str(tmp_path), "lr": 1e-3}
    saved = saved_form_values(tmp_path, "01_prepare_data")
    assert saved == ns
    assert json.loads((tmp_path / "notebooks" / "01_prepare_data.form.json").read_text())["seed"] == 42
    folder.value = ""
    assert ns["data_dir"] is None


def test_form_refuses_parameters_that_are_not_defined():
    with pytest.raises(KeyError, match="parameters cell"):
        parameter_form({}, {"ndim": [2, 3]})
