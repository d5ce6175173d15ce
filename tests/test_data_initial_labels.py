import numpy as np
import pytest
from scipy import ndimage

from microseg.data.initial_labels import initial_labels, write_initial_labels
from microseg.data.synthetic import synthetic_sample
from microseg.errors import ConfigError, OutputExistsError
from microseg.io import read_image, read_label, write_image


def _dice(a, b):
    return 2.0 * np.sum(a & b) / (a.sum() + b.sum())


def test_separate_squares_are_found_exactly():
    image = np.zeros((1, 30, 40), np.uint16)
    image[0, 3:10, 4:12] = 100
    image[0, 15:27, 20:35] = 180
    labels = initial_labels(image, smoothing=0)
    assert labels.dtype == np.int32 and labels.max() == 2
    reference, n = ndimage.label(image[0] > 0)
    assert n == 2
    for object_id in (1, 2):
        assert len(np.unique(reference[labels == object_id])) == 1
    np.testing.assert_array_equal(labels > 0, reference > 0)


def _two_touching_discs(ndim):
    grid = np.indices((40,) * ndim)
    centres = [(20,) * (ndim - 1) + (12,), (20,) * (ndim - 1) + (27,)]
    inside = [sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= 64
              for centre in centres]
    return (np.logical_or(*inside) * 200.0)[None]


@pytest.mark.parametrize("ndim", [2, 3])
def test_touching_objects_are_split_only_when_asked(ndim):
    image = _two_touching_discs(ndim)
    assert ndimage.label(image[0] > 0)[1] == 1, "the discs touch"
    assert initial_labels(image, smoothing=0).max() == 2
    assert initial_labels(image, smoothing=0, split_touching=False).max() == 1


def test_small_specks_and_constant_images_give_no_objects():
    image = np.zeros((1, 20, 20), np.float32)
    image[0, 2:4, 2:4] = 1.0
    image[0, 8:16, 8:16] = 1.0
    assert initial_labels(image, smoothing=0, min_size=16).max() == 1
    assert initial_labels(image, smoothing=0, min_size=1).max() == 2
    assert initial_labels(np.full((1, 10, 10), 5.0)).max() == 0
    with pytest.raises(ConfigError, match="threshold method"):
        initial_labels(image, method="magic")


@pytest.mark.parametrize("shape", [(160, 160), (24, 64, 64)], ids=["2d", "3d"])
def test_initial_labels_of_synthetic_nuclei_are_reasonable(shape):
    image, truth = synthetic_sample(shape, seed=4)
    labels = initial_labels(image)
    assert _dice(labels > 0, truth > 0) > 0.85
    assert abs(int(labels.max()) - int(truth.max())) <= 0.3 * truth.max()


def test_write_initial_labels_into_a_new_folder_only(tmp_path):
    images = tmp_path / "data" / "images"
    for i in range(2):
        write_image(images / f"img{i}.tif", synthetic_sample((64, 64), seed=i)[0], axes="CYX")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir())
    with pytest.raises(ConfigError, match="never written"):
        write_initial_labels(images, images / "initial")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir()) == before

    written = write_initial_labels(images, tmp_path / "initial")
    assert [p.name for p in written] == ["img0.tif", "img1.tif"]
    for path in written:
        expected = initial_labels(read_image(images / path.name))
        np.testing.assert_array_equal(read_label(path), expected)
    with pytest.raises(OutputExistsError):
        write_initial_labels(images, tmp_path / "initial")
