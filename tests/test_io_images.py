"""microseg.io.images: every reader against the array written, axes rules, labels, errors."""

from __future__ import annotations

import logging
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

from microseg.errors import DataError, OutputExistsError
from microseg.io.images import (
    VALID_AXES,
    canonical_shape,
    guess_axes,
    image_stem,
    is_grey_rgb,
    open_image,
    read_header,
    read_image,
    read_label,
    to_canonical,
    validate_axes,
    write_image,
)

DTYPES = [np.uint8, np.uint16, np.float32]


def random_array(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def assert_same(actual, expected):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


# ---------------------------------------------------------------- stems and axes rules

@pytest.mark.parametrize(("name", "stem"), [
    ("a.tif", "a"), ("a.TIFF", "a"), ("cell.01.png", "cell.01"), ("x.ome.tif", "x"),
    ("x.ome.tiff", "x"), ("v.ome.zarr", "v"), ("v.zarr", "v"), ("n.npy", "n"), ("j.jpeg", "j"),
])
def test_image_stem_strips_single_and_double_extensions(name, stem):
    assert image_stem(f"some/folder/{name}") == stem


@pytest.mark.parametrize(("shape", "ndim", "axes"), [
    ((64, 48), None, "YX"),
    ((64, 48, 3), None, "YXC"),
    ((64, 48, 4), 2, "YXC"),
    ((2, 64, 48), None, "CYX"),
    ((4, 64, 48), 2, "CYX"),
    ((3, 3, 3), None, "CYX"),          # last dim 3 but not smaller than the others: not RGB
    ((30, 64, 48), None, "ZYX"),
    ((2, 64, 48), 3, "ZYX"),           # ndim=3 makes a small first axis z
    ((64, 48, 3), 3, "ZYX"),
    ((2, 30, 64, 48), None, "CZYX"),
    ((30, 2, 64, 48), None, "ZCYX"),
    ((30, 64, 48, 3), None, "ZYXC"),
    ((1, 2, 30, 64, 48), None, "TCZYX"),
    ((1, 30, 2, 64, 48), 3, "TZCYX"),
])
def test_guess_axes_follows_each_documented_rule(shape, ndim, axes):
    assert guess_axes(shape, ndim) == axes


@pytest.mark.parametrize(("shape", "ndim", "match"), [
    ((64, 48), 3, "cannot be 3D"),
    ((30, 64, 48), 2, "none small enough"),
    ((30, 40, 64, 48), None, "cannot tell channels"),
    ((2, 30, 64, 48), 2, "cannot be 2D"),
    ((2, 2, 30, 64, 48), None, "cannot guess"),
    ((64,), None, "cannot guess"),
])
def test_guess_axes_asks_for_axes_when_no_rule_applies(shape, ndim, match):
    with pytest.raises(ValueError, match=match) as info:
        guess_axes(shape, ndim)
    assert "pass" in str(info.value)


def test_validate_axes_normalizes_and_names_valid_axes_and_shape():
    assert validate_axes("czyx", (2, 3, 4, 5)) == "CZYX"
    assert validate_axes("YXS", (4, 5, 3)) == "YXC"
    assert validate_axes("TCYX", (1, 2, 4, 5)) == "TCYX"
    with pytest.raises(ValueError) as info:
        validate_axes("CXY", (3, 64, 64))
    message = str(info.value)
    assert "(3, 64, 64)" in message
    assert all(axes in message for axes in ("YX", "CYX", "YXC", "ZYX", "CZYX", "ZCYX", "ZYXC"))
    with pytest.raises(ValueError, match="one letter per dimension"):
        validate_axes("ZYX", (64, 64))


def test_validate_axes_refuses_several_time_points_and_suggests_z():
    with pytest.raises(ValueError, match="5 time points") as info:
        validate_axes("TYX", (5, 64, 64))
    assert "'ZYX'" in str(info.value)


@pytest.mark.parametrize(("axes", "shape", "order"), [
    ("YX", (5, 6), None),
    ("YXC", (5, 6, 3), (2, 0, 1)),
    ("ZYX", (4, 5, 6), None),
    ("ZCYX", (4, 2, 5, 6), (1, 0, 2, 3)),
    ("ZYXC", (4, 5, 6, 2), (3, 0, 1, 2)),
    ("CZYX", (2, 4, 5, 6), (0, 1, 2, 3)),
])
def test_to_canonical_matches_a_transpose_written_by_hand(rng, axes, shape, order):
    array = rng.normal(size=shape)
    expected = array[None] if order is None else np.transpose(array, order)
    assert_same(to_canonical(array, axes), expected)


def test_to_canonical_drops_a_singleton_time_axis_and_refuses_more():
    array = np.arange(2 * 3 * 4 * 5).reshape(1, 2, 3, 4, 5)
    assert_same(to_canonical(array, "TZCYX"), np.transpose(array[0], (1, 0, 2, 3)))
    with pytest.raises(ValueError, match="2 time points"):
        to_canonical(np.zeros((2, 4, 5)), "TYX")


def test_canonical_shape_without_data():
    assert canonical_shape((30, 2, 64, 48), "ZCYX") == (2, (30, 64, 48))
    assert canonical_shape((64, 48, 3), "YXC") == (3, (64, 48))
    assert canonical_shape((64, 48), "YX") == (1, (64, 48))


def test_is_grey_rgb(rng):
    grey = rng.integers(0, 255, size=(8, 9), dtype=np.uint8)
    rgb_grey = np.stack([grey] * 3, axis=-1)
    assert is_grey_rgb(rgb_grey, "YXC")
    assert is_grey_rgb(np.stack([grey] * 3), "CYX")
    rgba = np.concatenate([rgb_grey, np.full((8, 9, 1), 255, np.uint8)], axis=-1)
    assert is_grey_rgb(rgba, "YXC")
    rgba[0, 0, 3] = 0
    assert not is_grey_rgb(rgba, "YXC")
    colour = rgb_grey.copy()
    colour[3, 4, 1] += 1
    assert not is_grey_rgb(colour, "YXC")
    assert not is_grey_rgb(np.stack([grey] * 2), "CYX")
    assert not is_grey_rgb(grey, "YX")


# ---------------------------------------------------------------- TIFF

@pytest.mark.parametrize("dtype", DTYPES)
def test_tiff_2d_round_trip(tmp_path, rng, dtype):
    array = random_array(rng, (20, 30), dtype)
    tifffile.imwrite(tmp_path / "a.tif", array)
    assert_same(read_image(tmp_path / "a.tif"), array[None])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiff_3d_with_axes_metadata_round_trip(tmp_path, rng, dtype):
    array = random_array(rng, (3, 20, 30), dtype)
    tifffile.imwrite(tmp_path / "v.tif", array, metadata={"axes": "ZYX"}, photometric="minisblack")
    assert_same(read_image(tmp_path / "v.tif"), array[None])


def test_tiff_multichannel_round_trip(tmp_path, rng):
    array = random_array(rng, (2, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", array, metadata={"axes": "CYX"}, photometric="minisblack")
    assert_same(read_image(tmp_path / "c.tif"), array)


def test_tiff_without_axes_uses_the_guess_and_axes_argument_overrides(tmp_path, rng):
    array = random_array(rng, (3, 20, 30), np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", array, photometric="minisblack")
    assert_same(read_image(tmp_path / "s.tif"), array)                 # guessed CYX
    assert_same(read_image(tmp_path / "s.tif", ndim=3), array[None])   # ZYX
    assert_same(read_image(tmp_path / "s.tif", axes="ZYX"), array[None])


def test_bigtiff_round_trip(tmp_path, rng):
    array = random_array(rng, (2, 16, 24), np.float32)
    tifffile.imwrite(tmp_path / "big.tif", array, bigtiff=True, metadata={"axes": "ZYX"},
                     photometric="minisblack")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    assert_same(read_image(tmp_path / "big.tif"), array[None])


@pytest.mark.parametrize("dtype", DTYPES)
def test_imagej_hyperstack_zcyx_becomes_czyx(tmp_path, rng, dtype):
    array = random_array(rng, (4, 2, 16, 24), dtype)
    tifffile.imwrite(tmp_path / "hs.tif", array, imagej=True, metadata={"axes": "ZCYX"})
    assert_same(read_image(tmp_path / "hs.tif"), np.transpose(array, (1, 0, 2, 3)))


def test_imagej_time_series_is_refused_with_a_hint(tmp_path, rng):
    array = random_array(rng, (3, 16, 24), np.uint8)
    tifffile.imwrite(tmp_path / "frames.tif", array, imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(DataError, match="frames.tif") as info:
        read_image(tmp_path / "frames.tif")
    assert "3 time points" in str(info.value) and "axes='ZYX'" in str(info.value)
    assert_same(read_image(tmp_path / "frames.tif", axes="ZYX"), array[None])


def test_ome_tiff_round_trip(tmp_path, rng):
    array = random_array(rng, (2, 3, 16, 24), np.uint16)
    tifffile.imwrite(tmp_path / "x.ome.tif", array, metadata={"axes": "CZYX"},
                     photometric="minisblack")
    assert image_stem(tmp_path / "x.ome.tif") == "x"
    assert_same(read_image(tmp_path / "x.ome.tif"), array)


def test_rgb_tiff_is_channels_last_on_disk_and_first_in_memory(tmp_path, rng):
    array = random_array(rng, (16, 24, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", array, photometric="rgb")
    assert_same(read_image(tmp_path / "rgb.tif"), np.moveaxis(array, -1, 0))


# ---------------------------------------------------------------- PNG, JPEG

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_grey_round_trip(tmp_path, rng, dtype):
    array = random_array(rng, (17, 23), dtype)
    (tmp_path / "g.png").write_bytes(imagecodecs.png_encode(array))
    assert_same(read_image(tmp_path / "g.png"), array[None])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_colour_keeps_three_channels(tmp_path, rng, dtype):
    array = random_array(rng, (17, 23, 3), dtype)
    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(array))
    assert_same(read_image(tmp_path / "c.png"), np.moveaxis(array, -1, 0))


def test_png_grey_rgb_collapses_to_one_channel_and_says_so(tmp_path, rng, caplog):
    grey = random_array(rng, (17, 23), np.uint8)
    (tmp_path / "g.png").write_bytes(imagecodecs.png_encode(np.stack([grey] * 3, axis=-1)))
    with caplog.at_level(logging.INFO, logger="microseg.io.images"):
        image = read_image(tmp_path / "g.png")
    assert_same(image, grey[None])
    assert "really grey" in caplog.text and "g.png" in caplog.text
    kept = read_image(tmp_path / "g.png", collapse_grey_rgb=False)
    assert_same(kept, np.stack([grey] * 3))


def test_palette_png_gives_index_values(tmp_path):
    from PIL import Image

    indices = (np.arange(12, dtype=np.uint8) % 5).reshape(3, 4)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([value for i in range(5) for value in (40 * i, 255 - 40 * i, 7)])
    image.save(tmp_path / "p.png")
    assert_same(read_image(tmp_path / "p.png"), indices[None])


def test_jpeg_reads_close_to_what_was_encoded(tmp_path):
    y, x = np.mgrid[0:32, 0:40]
    array = np.stack([y * 4, x * 3, (x + y) * 2], axis=-1).astype(np.uint8)
    (tmp_path / "c.jpg").write_bytes(imagecodecs.jpeg8_encode(array, level=95))
    image = read_image(tmp_path / "c.jpg")
    assert image.shape == (3, 32, 40) and image.dtype == np.uint8
    difference = np.abs(image.astype(float) - np.moveaxis(array, -1, 0))
    assert difference.mean() < 3


# ---------------------------------------------------------------- NumPy and Zarr

@pytest.mark.parametrize("dtype", DTYPES)
def test_npy_round_trip(tmp_path, rng, dtype):
    array = random_array(rng, (5, 16, 24), dtype)
    np.save(tmp_path / "v.npy", array)
    assert_same(read_image(tmp_path / "v.npy"), array[None])             # guessed ZYX
    assert_same(read_image(tmp_path / "v.npy", axes="ZYX"), array[None])


def test_zarr_array_with_and_without_axes_attribute(tmp_path, rng):
    array = random_array(rng, (2, 16, 24), np.float32)
    zarr.create_array(str(tmp_path / "a.zarr"), data=array, attributes={"axes": "ZYX"})
    zarr.create_array(str(tmp_path / "b.zarr"), data=array)
    assert_same(read_image(tmp_path / "a.zarr"), array[None])
    assert_same(read_image(tmp_path / "b.zarr"), array)                 # guessed CYX


def _ome_axes(names):
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    return [{"name": name, "type": kinds[name]} for name in names]


def _ome_multiscales(names, levels):
    return [{"version": "0.4", "axes": _ome_axes(names), "datasets": [
        {"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * (len(names) - 2) + [2.0**level] * 2}]}
        for level in range(levels)]}]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_written_by_hand_reads_level_zero(tmp_path, rng, zarr_format):
    array = random_array(rng, (1, 2, 3, 16, 24), np.uint16)      # TCZYX
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=zarr_format)
    group.create_array("0", data=array)
    group.create_array("1", data=array[..., ::2, ::2])
    multiscales = _ome_multiscales("tczyx", 2)
    if zarr_format == 2:
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    assert_same(read_image(tmp_path / "img.ome.zarr"), array[0])
    lazy, axes = open_image(tmp_path / "img.ome.zarr")
    assert axes == "TCZYX" and lazy.shape == array.shape


def test_zarr_group_without_multiscales_is_a_clear_error(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", data=np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="g.zarr.*multiscales.*raw"):
        read_image(tmp_path / "g.zarr")


# ---------------------------------------------------------------- open_image, read_header

def _write_for_lazy(tmp_path, rng):
    array = random_array(rng, (3, 2, 32, 40), np.uint16)         # ZCYX
    tifffile.imwrite(tmp_path / "plain.tif", array, metadata={"axes": "ZCYX"},
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "tiled.tif", array, metadata={"axes": "ZCYX"},
                     photometric="minisblack", tile=(16, 16), compression="zlib")
    tifffile.imwrite(tmp_path / "hyper.tif", array, imagej=True, metadata={"axes": "ZCYX"})
    np.save(tmp_path / "a.npy", array)
    zarr.create_array(str(tmp_path / "a.zarr"), data=array, attributes={"axes": "ZCYX"})
    return array


@pytest.mark.parametrize(("name", "kind"), [
    ("plain.tif", np.memmap), ("tiled.tif", zarr.Array), ("hyper.tif", np.memmap),
    ("a.npy", np.memmap), ("a.zarr", zarr.Array),
])
def test_open_image_is_lazy_and_equals_read_image(tmp_path, rng, name, kind):
    array = _write_for_lazy(tmp_path, rng)
    lazy, axes = open_image(tmp_path / name, axes="ZCYX" if name.endswith(".npy") else None)
    assert isinstance(lazy, kind)
    assert axes == "ZCYX" and lazy.shape == array.shape
    np.testing.assert_array_equal(lazy[1, :, 5:9], array[1, :, 5:9])
    eager = read_image(tmp_path / name, axes="ZCYX" if name.endswith(".npy") else None)
    assert_same(to_canonical(np.asarray(lazy[...]), axes), eager)
    assert_same(eager, np.transpose(array, (1, 0, 2, 3)))


def test_read_header_matches_the_data(tmp_path, rng):
    array = _write_for_lazy(tmp_path, rng)
    for name in ("plain.tif", "tiled.tif", "a.zarr"):
        header = read_header(tmp_path / name)
        assert (header.shape, header.axes, header.dtype) == (array.shape, "ZCYX", "uint16")
        assert header.spatial_shape == (3, 32, 40) and header.n_channels == 2


# ---------------------------------------------------------------- labels

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_read_label_integer_dtypes_become_int32(tmp_path, rng, dtype):
    labels = rng.integers(0, 200, size=(16, 24)).astype(dtype)
    tifffile.imwrite(tmp_path / "l.tif", labels)
    result = read_label(tmp_path / "l.tif")
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, labels.astype(np.int64))


def test_read_label_accepts_whole_floats_and_booleans(tmp_path):
    labels = np.array([[0, 1, 2], [3, 0, 70000]], np.float32)
    np.save(tmp_path / "f.npy", labels)
    np.testing.assert_array_equal(read_label(tmp_path / "f.npy"), labels.astype(np.int32))
    np.save(tmp_path / "b.npy", labels > 1)
    np.testing.assert_array_equal(read_label(tmp_path / "b.npy"), (labels > 1).astype(np.int32))


def test_read_label_3d_volume_with_few_slices_needs_ndim(tmp_path, rng):
    labels = rng.integers(0, 5, size=(3, 16, 24)).astype(np.uint16)
    np.save(tmp_path / "v.npy", labels)
    with pytest.raises(DataError, match="pass ndim=3"):
        read_label(tmp_path / "v.npy")
    np.testing.assert_array_equal(read_label(tmp_path / "v.npy", ndim=3), labels)


def test_read_label_refuses_fractions_naming_file_and_value(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[0, 0.5], [1, 2]], np.float32))
    with pytest.raises(DataError) as info:
        read_label(tmp_path / "a.npy")
    assert str(info.value) == (f"{tmp_path / 'a.npy'}: label values must be whole numbers ≥ 0; "
                               f"found float values such as 0.5")


def test_read_label_refuses_nan_negative_huge_and_channels(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[0, np.nan], [1, 2]], np.float64))
    np.save(tmp_path / "neg.npy", np.array([[0, -3], [1, 2]], np.int16))
    np.save(tmp_path / "huge.npy", np.array([[0, 2**31], [1, 2]], np.uint32))
    np.save(tmp_path / "rgb.npy", np.arange(16 * 24 * 3, dtype=np.uint8).reshape(16, 24, 3))
    for name, match in [("nan", "nan"), ("neg", "negative values such as -3"),
                        ("huge", "int32"), ("rgb", "one channel, found 3")]:
        with pytest.raises(DataError, match=match) as info:
            read_label(tmp_path / f"{name}.npy")
        assert f"{name}.npy" in str(info.value)


def test_read_label_accepts_grey_rgb(tmp_path, rng):
    labels = rng.integers(0, 9, size=(16, 24)).astype(np.uint8)
    (tmp_path / "l.png").write_bytes(imagecodecs.png_encode(np.stack([labels] * 3, axis=-1)))
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), labels)


# ---------------------------------------------------------------- read errors

def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="nothing.tif does not exist"):
        read_image(tmp_path / "nothing.tif")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(DataError) as info:
        read_image(tmp_path / "a.bmp")
    assert "a.bmp" in str(info.value) and "'.bmp'" in str(info.value)
    assert ".tif" in str(info.value) and ".ome.zarr" in str(info.value)


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.jpg", "bad.npy"])
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image" * 8)
    with pytest.raises(DataError, match=f"{name}: cannot be read") as info:
        read_image(tmp_path / name)
    assert "supported" in str(info.value)
    with pytest.raises(DataError, match=name):
        open_image(tmp_path / name)


def test_corrupt_zarr_and_object_npy(tmp_path):
    (tmp_path / "bad.zarr").mkdir()
    with pytest.raises(DataError, match="bad.zarr: cannot be read as Zarr"):
        read_image(tmp_path / "bad.zarr")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")


def test_non_numeric_data_is_refused(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((4, 4), np.complex64))
    with pytest.raises(DataError, match="c.npy: holds complex64"):
        read_image(tmp_path / "c.npy")


def test_ndim_mismatch_names_file_and_fix(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((16, 24), np.uint8))
    with pytest.raises(DataError, match="flat.tif: expected a 3D image, found a 2D one"):
        read_image(tmp_path / "flat.tif", ndim=3)


# ---------------------------------------------------------------- write_image round trips

@pytest.mark.parametrize(("name", "axes", "shape", "dtype", "order"), [
    ("a.tif", "YX", (16, 24), np.uint16, None),
    ("a.tif", "CYX", (3, 16, 24), np.float32, (0, 1, 2)),
    ("a.tif", "ZYX", (3, 16, 24), np.int32, None),
    ("a.tif", "ZCYX", (3, 2, 16, 24), np.uint8, (1, 0, 2, 3)),
    ("a.tif", "YXC", (16, 24, 3), np.uint8, (2, 0, 1)),
    ("a.tif", "YXC", (16, 24, 5), np.float32, (2, 0, 1)),
    ("a.tiff", "TCZYX", (1, 2, 3, 16, 24), np.uint16, (0, 1, 2, 3, 4)),
    ("a.png", "YX", (16, 24), np.uint16, None),
    ("a.png", "YXC", (16, 24, 3), np.uint8, (2, 0, 1)),
    ("a.png", "CYX", (4, 16, 24), np.uint8, (0, 1, 2)),
    ("a.npy", "ZYX", (3, 16, 24), np.float32, None),
    ("a.zarr", "ZCYX", (3, 2, 16, 24), np.uint16, (1, 0, 2, 3)),
    ("a.ome.zarr", "ZYXC", (3, 16, 24, 2), np.float32, (3, 0, 1, 2)),
])
def test_write_image_then_read_image(tmp_path, rng, name, axes, shape, dtype, order):
    array = random_array(rng, shape, dtype)
    expected = array[None] if order is None else np.transpose(array, order)
    if axes.startswith("T"):
        expected = expected[0]
    path = write_image(tmp_path / "sub" / name, array, axes=axes)
    assert path == tmp_path / "sub" / name
    read_axes = axes if name.endswith(".npy") else None
    assert_same(read_image(path, axes=read_axes, collapse_grey_rgb=False), expected)


def test_write_image_tiff_compression_and_bigtiff_switch(tmp_path):
    labels = np.zeros((64, 64), np.int32)
    labels[10:20, 5:40] = 7
    write_image(tmp_path / "l.tif", labels, axes="YX", compression="zlib")
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert not tif.is_bigtiff
    np.testing.assert_array_equal(read_label(tmp_path / "l.tif"), labels)


def test_write_image_switches_to_bigtiff_above_the_threshold(tmp_path, monkeypatch):
    import microseg.io.images as images

    monkeypatch.setattr(images, "_BIGTIFF_BYTES", 100)
    array = np.arange(200, dtype=np.uint8).reshape(10, 20)
    write_image(tmp_path / "big.tif", array, axes="YX")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    assert_same(read_image(tmp_path / "big.tif"), array[None])


def test_write_image_refuses_to_replace_unless_asked(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(OutputExistsError, match="a.tif already exists"):
        write_image(tmp_path / "a.tif", np.ones((4, 4), np.uint8))
    assert_same(read_image(tmp_path / "a.tif"), np.zeros((1, 4, 4), np.uint8))
    write_image(tmp_path / "a.tif", np.ones((4, 4), np.uint8), overwrite=True)
    assert_same(read_image(tmp_path / "a.tif"), np.ones((1, 4, 4), np.uint8))
    write_image(tmp_path / "a.zarr", np.zeros((4, 4), np.uint8))
    with pytest.raises(OutputExistsError):
        write_image(tmp_path / "a.zarr", np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize(("name", "array", "kwargs", "match"), [
    ("a.png", np.zeros((4, 4), np.float32), {}, "8- or 16-bit"),
    ("a.png", np.zeros((3, 4, 4), np.uint8), {"axes": "ZYX"}, "2D images"),
    ("a.png", np.zeros((4, 4, 5), np.uint8), {}, "pass axes"),
    ("a.bmp", np.zeros((4, 4), np.uint8), {}, "writable"),
    ("a.jpg", np.zeros((4, 4), np.uint8), {}, "writable"),
    ("a.npy", np.zeros((4, 4), np.uint8), {"compression": "zlib"}, "TIFF files only"),
    ("a.tif", np.zeros((4, 4), np.uint8), {"axes": "CYX"}, "do not fit"),
    ("a.ome.zarr", np.zeros((2, 4, 4), np.uint8), {}, "pass axes"),
])
def test_write_image_clear_errors(tmp_path, name, array, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_image(tmp_path / name, array, **kwargs)
    assert not (tmp_path / name).exists()


def test_valid_axes_list_has_singleton_time_variants():
    assert "TCZYX" in VALID_AXES and "TYX" in VALID_AXES and len(VALID_AXES) == 14


def test_importing_microseg_io_loads_no_heavy_package():
    code = ("import sys, microseg.io; heavy = ('torch', 'monai', 'dask', 'zarr', 'skimage', "
            "'matplotlib', 'tifffile', 'roifile'); print([m for m in heavy if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("stored", ["a.jpg", "a.tif"])
def test_labels_saved_as_jpeg_are_refused(tmp_path, stored):
    labels = np.zeros((32, 32), np.uint8)
    labels[4:14, 4:14], labels[18:30, 16:28] = 1, 5
    path = tmp_path / stored
    if stored.endswith(".jpg"):
        path.write_bytes(imagecodecs.jpeg8_encode(labels * 40, level=90))
    else:
        tifffile.imwrite(path, labels * 40, compression="jpeg")
    decoded = read_image(path)[0]
    assert len(np.unique(decoded)) > 3, "JPEG compression invents label values"
    with pytest.raises(DataError, match="must not be saved as JPEG.*as TIFF or PNG"):
        read_label(path)


def test_an_image_larger_than_the_memory_available_is_refused_before_reading(tmp_path,
                                                                             monkeypatch):
    from microseg.io import images

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16))
    assert read_image(path).shape == (1, 64, 64)
    monkeypatch.setattr(images, "available_memory", lambda: 4096)
    reads = []
    monkeypatch.setattr(images, "_EAGER_READERS",
                        {key: lambda p: reads.append(p) for key in images._EAGER_READERS})
    with pytest.raises(DataError, match=r"big.tif: its pixels \(\(64, 64\) uint16, 8.0 KiB\) do "
                                        r"not fit in the 4.0 KiB of memory available; predict "
                                        r"it piece by piece"):
        read_image(path)
    assert reads == []


def test_a_full_disk_while_writing_an_image_is_named_and_leaves_no_partial_file(tmp_path,
                                                                                 monkeypatch):
    import errno

    from microseg.errors import WriteError
    from microseg.io import images

    def half_then_full(path, array, axes, compression):
        path.write_bytes(b"II*\x00 half a TIFF")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(images._WRITERS, "tiff", half_then_full)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'labels' / 'a.tif'}: the "
                                         f"disk holding .* is full"):
        write_image(tmp_path / "labels" / "a.tif", np.zeros((4, 4), np.uint16))
    assert list((tmp_path / "labels").iterdir()) == []
