import json

import pytest

from microseg.notebook.forms import AnyOf, form_value, parameter_form, saved_form_values


def _restore_button(form):
    buttons = [w for row in form.children for w in getattr(row, "children", ())
               if type(w).__name__ == "Button"]
    return buttons[0] if buttons else None


def test_form_writes_into_the_namespace_and_the_run(tmp_path):
    ns = {"ndim": 2, "seed": 0, "quick": False, "data_dir": None, "lr": 1e-3}
    form = parameter_form(ns, {"ndim": [2, 3], "seed": (0, 100), "quick": bool,
                               "data_dir": "folder", "lr": float},
                          run_dir=tmp_path, name="01_prepare_data")
    ndim, seed, quick, folder, lr = form.value_widgets.values()
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


def test_optional_numbers_are_typed_and_may_be_none(tmp_path):
    ns = {"epochs": None, "learning_rate": None, "tile_shape": [32, 64, 64]}
    form = parameter_form(ns, {"epochs": int | None, "learning_rate": float | None,
                               "tile_shape": int | None}, run_dir=tmp_path, name="02")
    epochs, rate, tile = form.value_widgets.values()
    assert (epochs.value, rate.value, tile.value) == ("", "", "32, 64, 64")
    epochs.value, rate.value, tile.value = " 40 ", "2e-4", "96"
    assert ns == {"epochs": 40, "learning_rate": 2e-4, "tile_shape": 96}
    assert type(ns["epochs"]) is int and type(ns["learning_rate"]) is float
    tile.value = "16, 128 128"
    assert ns["tile_shape"] == [16, 128, 128]
    epochs.value = "12.5"
    assert ns["epochs"] == 40, "invalid text leaves the parameter as it was"
    status = form.children[-1]
    assert "epochs" in status.value and "'12.5' is not a whole number" in status.value
    assert saved_form_values(tmp_path, "02")["epochs"] == 40
    epochs.value = ""
    assert ns["epochs"] is None and status.value == ""
    assert saved_form_values(tmp_path, "02") == {"epochs": None, "learning_rate": 2e-4,
                                                 "tile_shape": [16, 128, 128]}


def test_any_of_writes_the_ticked_choices_in_their_order(tmp_path):
    ns = {"export_formats": ["onnx"]}
    form = parameter_form(ns, {"export_formats": AnyOf("torchscript", "onnx", "bioimageio")},
                          run_dir=tmp_path, name="07_deploy")
    row = form.children[1]
    assert {c: b.value for c, b in row.checkboxes.items()} == {
        "torchscript": False, "onnx": True, "bioimageio": False}
    row.checkboxes["bioimageio"].value = True
    row.checkboxes["torchscript"].value = True
    assert ns["export_formats"] == ["torchscript", "onnx", "bioimageio"]
    for box in row.checkboxes.values():
        box.value = False
    assert ns["export_formats"] == []
    assert saved_form_values(tmp_path, "07_deploy") == {"export_formats": []}
    form.value_widgets["export_formats"].value = ("bioimageio", "onnx")
    assert ns["export_formats"] == ["onnx", "bioimageio"]
    assert row.checkboxes["onnx"].value and not row.checkboxes["torchscript"].value


def test_values_outside_the_choices_are_kept_and_selectable():
    ns = {"batch_size": 6, "seed": 1000, "models": ["unet", "mine"], "model_name": None}
    form = parameter_form(ns, {"batch_size": [None, "auto", 8], "seed": (0, 100),
                               "models": AnyOf("unet", "transfer"),
                               "model_name": [None, "unet"]})
    batch, seed, models, model_name = form.value_widgets.values()
    assert batch.value == 6 and list(batch.options) == [None, "auto", 8, 6]
    assert seed.value == 1000 and seed.max == 1000
    assert models.value == ("unet", "mine")
    batch.value = "auto"
    model_name.value = "unet"
    assert ns["batch_size"] == "auto" and ns["model_name"] == "unet"
    batch.value = None
    assert ns["batch_size"] is None
    form.children[3].checkboxes["mine"].value = False
    assert ns["models"] == ["unet"]


def test_number_fields_refuse_a_parameter_that_is_none():
    with pytest.raises(TypeError, match=r"epochs is None.*int \| None"):
        parameter_form({"epochs": None}, {"epochs": (1, 100)})


def test_form_offers_the_values_saved_with_the_run(tmp_path):
    fields = {"norm": ["batchrenorm", "batch"], "epochs": int | None, "quick": bool}
    first = {"norm": "batchrenorm", "epochs": None, "quick": False}
    form = parameter_form(first, fields, run_dir=tmp_path, name="02_train")
    assert _restore_button(form) is None
    form.value_widgets["norm"].value = "batch"
    form.value_widgets["epochs"].value = "7"

    reopened = {"norm": "batchrenorm", "epochs": None, "quick": False}
    form = parameter_form(reopened, fields, run_dir=tmp_path, name="02_train")
    button = _restore_button(form)
    assert button is not None and "norm = 'batch'" in form.children[1].children[0].value
    assert reopened["norm"] == "batchrenorm", "the saved values wait for the button"
    button.click()
    assert reopened == {"norm": "batch", "epochs": 7, "quick": False}
    assert form.value_widgets["norm"].value == "batch"
    assert form.value_widgets["epochs"].value == "7"
    assert _restore_button(form) is None
    form.value_widgets["quick"].value = True
    assert saved_form_values(tmp_path, "02_train") == {"norm": "batch", "epochs": 7, "quick": True}


@pytest.mark.parametrize(("spec", "raw", "expected"), [
    ("folder", "", None), ("folder", "/data", "/data"), (str, "", None), (str, "unet", "unet"),
    (int | None, "[32, 64]", [32, 64]), (float | None, "0.5", 0.5), ([2, 3], 3, 3),
    (AnyOf("a", "b"), ("b", "x", "a"), ["a", "b", "x"]),
])
def test_form_value_converts_what_the_widget_shows(spec, raw, expected):
    assert form_value("p", spec, raw) == expected


def test_form_value_names_the_parameter_and_the_expected_text():
    with pytest.raises(ValueError, match=r"learning_rate: 'fast' is not a number; expected"):
        form_value("learning_rate", float | None, "fast")


def test_a_damaged_form_record_is_named_instead_of_a_json_traceback(tmp_path):
    from microseg.errors import DataError

    record = tmp_path / "notebooks" / "02_train.form.json"
    record.parent.mkdir()
    record.write_text('{"norm": "ba')
    with pytest.raises(DataError, match="02_train.form.json is not valid JSON.*delete it"):
        parameter_form({"norm": "batch"}, {"norm": ["batch"]}, run_dir=tmp_path,
                       name="02_train")
    with pytest.raises(DataError, match="02_train.form.json is not valid JSON"):
        saved_form_values(tmp_path, "02_train")
