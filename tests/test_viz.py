import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from microseg.data.dataset import Sample
from microseg.data.split import SplitManifest, manifest_entry
from microseg.reports import figures as viz
from microseg.transforms.normalization import PercentileNormalization

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _sample(rng, spatial, stem="a", labelled=True):
    label = np.zeros(spatial, np.int32)
    label[(slice(None),) * (len(spatial) - 2) + (slice(2, 6), slice(3, 9))] = 1
    image = rng.random((2, *spatial)).astype(np.float32)
    return Sample(stem, image, label if labelled else None, (label > 0).astype(np.uint8)
                  if labelled else None)


def test_display_plane_takes_first_channel_and_middle_slice():
    volume = np.arange(2 * 5 * 3 * 4).reshape(2, 5, 3, 4)
    np.testing.assert_array_equal(viz.display_plane(volume), volume[0, 2])
    np.testing.assert_array_equal(viz.display_plane(volume[0], channels=False), volume[0, 2])


def test_data_figures_have_one_panel_per_view_and_save(rng, tmp_path):
    samples = [_sample(rng, (12, 16), "a"), _sample(rng, (4, 12, 16), "b")]
    figure = viz.show_samples(samples, n=4)
    assert len(figure.axes) == 3 * 2
    unlabelled = viz.show_samples([_sample(rng, (12, 16), labelled=False)])
    assert len(unlabelled.axes) == 1

    augmented = viz.show_augmentations(samples[0].image, samples[0].target, _flip, n=2, patch=8)
    assert len(augmented.axes) == 2 * 3
    shown = augmented.axes[1].images[0].get_array()
    assert shown.shape == (8, 8)

    initial = viz.show_initial_labels(samples[0].image, samples[0].label, samples[0].label)
    assert len(initial.axes) == 3
    path = viz.save_figure(figure, tmp_path / "figures" / "samples.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def _flip(image, target):
    return image[:, ::-1].copy(), target[::-1].copy()


def test_split_and_normalization_figures(tmp_path):
    def entry(stem, low):
        return manifest_entry(stem, tmp_path / f"{stem}.tif", None, [low], [low + 100])

    manifest = SplitManifest(str(tmp_path), 2, "CYX", 1, "instance", 3,
                             PercentileNormalization().to_dict(),
                             train=[entry(f"t{i}", i) for i in range(6)], val=[entry("v", 50)],
                             test=[entry("x", 60)])
    split = viz.show_split(manifest)
    assert [p.get_width() for p in split.axes[0].patches] == [6, 1, 1]
    normalization = viz.show_normalization(manifest)
    offsets = np.concatenate([c.get_offsets() for c in normalization.axes[0].collections])
    assert offsets[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 50, 60]


LONG_NAME = "2026-12-03_HeLa-H2B-GFP_confocal-63x_plate01_wellB07_field003_z0"


def titles_fit_their_panels(figure):
    """Each panel's title is no wider than the panel, so it cannot reach the next one."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return all(axis.title.get_window_extent(renderer).width
               <= axis.get_window_extent(renderer).width for axis in figure.axes)


@pytest.mark.parametrize(("name", "limit", "expected"), [
    ("short_name", 24, "short_name"),
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghijk", 10, "abcd…ghijk"),
    ("plate01_wellB07_field003_channel1", 12, "plate…annel1"),
])
def test_shorten_middle(name, limit, expected):
    short = viz.shorten_middle(name, limit)
    assert short == expected and len(short) <= limit


def test_shorten_middle_keeps_both_ends_of_a_long_name():
    assert len(LONG_NAME) == 64
    short = viz.shorten_middle(LONG_NAME, 24)
    assert len(short) == 24 and short.count("…") == 1
    head, tail = short.split("…")
    assert LONG_NAME.startswith(head) and LONG_NAME.endswith(tail)
    with pytest.raises(ValueError, match="at least 3"):
        viz.shorten_middle(LONG_NAME, 2)


def test_long_file_names_fit_their_panels(rng):
    samples = [_sample(rng, (12, 16), LONG_NAME + str(k)) for k in range(3)]
    assert titles_fit_their_panels(viz.show_samples(samples, n=3))


def test_a_figure_that_cannot_be_written_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from microseg.errors import WriteError
    from microseg.reports.figures import save_figure

    figure = plt.figure()

    def fill_the_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(figure, "savefig", fill_the_disk)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'pairs.png'}: the disk "):
        save_figure(figure, tmp_path / "pairs.png")
    plt.close(figure)
    assert list(tmp_path.iterdir()) == []
