"""Export a model as a bioimage.io model package (format 0.5), tested with ``bioimageio.core``.

The package (one ``.zip``) runs in bioimage.io consumers (bioimageio.core, ilastik, DeepImageJ,
QuPath, napari plugins). It holds:

- PyTorch state-dict weights, rebuilt by :func:`microseg.export.bioimageio_arch.build_from_kwargs`
  from the model's :class:`~microseg.models.ModelConfig` (needs microseg installed), and
  TorchScript weights converted from them (need only PyTorch);
- the input normalization as bioimage.io preprocessing, and a softmax as postprocessing, so the
  package maps raw images to class probabilities (K, *spatial);
- the halo of the output axes: tile with at least this overlap and crop it for seamless results;
- a test input and its expected output (``.npy``), a cover image, a README with a Validation
  section, authors, licence and citations.

Global percentile normalization and bioimage.io's ``scale_range``
------------------------------------------------------------------
microseg normalizes each image with percentiles of the *whole image*, computed once ("global").
``scale_range`` computes its percentiles per *sample*. When a consumer gives the whole image as
one sample (bioimageio.core does, and computes sample statistics before it splits the image into
blocks), the two agree: the sample is the image. A consumer that feeds tiles of one image as
separate samples would normalize each tile on its own (tile-wise normalization), which causes
tile mismatch. The README inside the package says so; only global normalization is exported.
bioimageio.core also pads the image by the halo (mirrored, ``reflect``) *before* it computes
the percentiles, so its statistics include those border strips: for an image much larger than the
halo the difference is negligible, for a tiny one it is visible. The network then sees that
mirrored strip at the image border, as microseg's ``border="extend"``; microseg's own prediction
keeps its windows inside the image (``border="inside"``), so the two differ within one receptive
field of the image border and agree elsewhere.

Example
-------
>>> result = export_bioimageio("runs/demo/models/unet", "runs/demo/predictions/unet/unet.zip",
...                            test_image, normalization=None, halo=16)  # doctest: +SKIP
>>> result["test_passed"]                                               # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError, MicrosegError
from microseg.export.checks import refuse_existing
from microseg.runs import atomic_write

__all__ = [
    "ARCHITECTURE_CALLABLE",
    "ARCHITECTURE_MODULE",
    "BioimageioMetadata",
    "bioimageio_unavailable_reason",
    "check_package",
    "export_bioimageio",
]

ARCHITECTURE_MODULE = "microseg.export.bioimageio_arch"
ARCHITECTURE_CALLABLE = "build_from_kwargs"
_UNET_DOI = "10.1007/978-3-319-24574-4_28"
_UNET_TEXT = "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image " \
             "Segmentation. MICCAI 2015"


@dataclasses.dataclass
class BioimageioMetadata(StageConfig):
    """What a bioimage.io package says about the model, for the people who will reuse it.

    Fields
    ------
    name : the model's name (shown on bioimage.io), at most 128 characters.
    description : one or two sentences: what it segments, in which images.
    authors : names of the people who trained the model.
    maintainer_github_user : GitHub account of the person who answers questions about the model
        (bioimage.io asks for one before upload); empty: none.
    license : SPDX licence identifier of the weights, e.g. ``"CC-BY-4.0"`` or ``"MIT"``.
    citations : ``(text, DOI)`` pairs users of the model should cite; by default U-Net.
    tags : keywords (modality, organism, structure), lower case.
    version : version of this model, e.g. ``"0.1.0"``; raise it when the weights change.
    input_channel_names : one name per input channel; empty: ``channel0``, ``channel1``, ...
    class_names : one name per output channel; empty: ``background, foreground`` for 2 classes,
        ``background, foreground, boundary`` for 3 (microseg's instance task), else
        ``background, class1, class2, ...``.
    documentation : Markdown added to the package's README.md (training data, known limits).
    """

    name: str = "microseg U-Net"
    description: str = "Segmentation network for microscopy images, trained with microseg."
    authors: tuple[str, ...] = ("microseg user",)
    maintainer_github_user: str = ""
    license: str = "CC-BY-4.0"
    citations: tuple[tuple[str, str], ...] = ((_UNET_TEXT, _UNET_DOI),)
    tags: tuple[str, ...] = ("segmentation", "microscopy", "unet", "microseg")
    version: str = "0.1.0"
    input_channel_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    documentation: str = ""


@dataclasses.dataclass(frozen=True)
class _PackageFiles:
    """The files of one package, staged in a temporary folder before zipping."""

    weights: Path
    torchscript: Path
    test_input: Path
    test_output: Path
    sample_input: Path
    sample_output: Path
    cover: Path
    readme: Path


def export_bioimageio(
    model: Any,
    out_path: str | Path,
    test_input: np.ndarray,
    normalization: Any = None,
    halo: int | Sequence[int] | None = None,
    metadata: BioimageioMetadata | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a bioimage.io model package (``.zip``) and run bioimageio.core's own test on it.

    Parameters
    ----------
    model : a :class:`~microseg.models.TrainedModel`, a model folder (loaded with
        :meth:`~microseg.models.TrainedModel.load`), or ``(network, ModelConfig)``.
    out_path : the ``.zip`` to write (written atomically).
    test_input : one raw image (C, Y, X) or (C, Z, Y, X), any real dtype, *not* normalized;
        each spatial side a multiple of the model's size divisor and larger than twice the halo.
        It becomes the package's test input; keep it small (e.g. 64² or 32³).
    normalization : the :class:`~microseg.transforms.normalization.PercentileNormalization`
        (global mode) the model was trained with; None: the trained model's own (the defaults,
        1 and 99.8, for a bare network).
    halo : pixels to crop from each side of every predicted tile (one value, or one per spatial
        axis ZYX/YX); None: the trained model's halo (its receptive-field radius).
    metadata : names, authors, licence, citations; None: :class:`BioimageioMetadata` defaults.
    overwrite : replace an existing package at ``out_path``.

    Returns
    -------
    dict with ``path``, ``status`` (bioimageio.core's test status, "passed" when it passed),
    ``test_passed``, ``weight_formats``, ``torchscript_max_abs_diff``, ``halo``, ``errors`` and
    ``warnings`` (messages from the test).

    Raises
    ------
    OutputExistsError if ``out_path`` exists and ``overwrite`` is false; DataError for a test
    input that does not fit the model; ConfigError for a normalization bioimage.io cannot
    express; MicrosegError if the package cannot be built or does not load back.
    """
    out_path = _checked_out_path(out_path, overwrite)
    trained = _trained_model(model)
    network, config = trained.network, trained.config
    metadata = metadata or BioimageioMetadata()
    normalization = _checked_normalization(normalization or trained.normalization)
    halos = _per_axis_halo(trained.halo if halo is None else halo, config.ndim)
    image = _checked_test_input(test_input, config, halos)
    problem = bioimageio_unavailable_reason()
    if problem:
        raise MicrosegError(problem)
    torchscript = _write_package(out_path, network, config, image, normalization, metadata, halos)
    return {
        "path": str(out_path),
        "weight_formats": ["pytorch_state_dict", "torchscript"],
        "torchscript_max_abs_diff": torchscript["max_abs_diff"],
        "halo": list(halos),
        **check_package(out_path),
    }


def _write_package(out_path: Path, network: Any, config: Any, image: np.ndarray,
                   normalization: Any, metadata: BioimageioMetadata, halos: tuple[int, ...]
                   ) -> dict[str, Any]:
    """Stage the files, describe them, zip them to ``out_path``; the TorchScript export result."""
    from bioimageio.spec import save_bioimageio_package

    with tempfile.TemporaryDirectory(prefix="microseg-bioimageio-") as staging:
        files, torchscript = _stage_files(Path(staging), network, config, image, normalization,
                                          metadata, halos)
        description = _model_description(files, config, normalization, metadata, halos)
        atomic_write(out_path, lambda tmp: save_bioimageio_package(description, output_path=tmp))
    return torchscript


def check_package(path: str | Path) -> dict[str, Any]:
    """Run bioimageio.core's own test on a package (offline, CPU) and load it back.

    Returns ``status`` ("passed" when every check passed), ``test_passed``, ``errors`` and
    ``warnings`` (messages of warning level; informational ones are left out).

    Raises
    ------
    MicrosegError if the package does not load back as a model description.
    """
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    from microseg.export.torchscript import jit_deprecation_silenced

    with jit_deprecation_silenced():
        summary = test_model(path, devices=["cpu"])
    if load_description(path, perform_io_checks=False).type != "model":
        raise MicrosegError(f"{path} does not load back as a bioimage.io model")
    return {
        "status": summary.status,
        "test_passed": summary.status == "passed",
        "errors": [e.msg for d in summary.details for e in d.errors],
        "warnings": [w.msg for d in summary.details for w in d.warnings
                     if w.severity >= logging.WARNING],
    }


def bioimageio_unavailable_reason() -> str | None:
    """Why bioimage.io packages cannot be written in this environment, or None if they can.

    bioimageio.spec 0.5.12 (the version bioimageio.core 0.11 requires) passes pydantic's
    ``SerializationInfo`` where pydantic expects an index key; pydantic 2.14 turned that from a
    silently ignored mistake into a ``TypeError``, so no weights entry can be serialized.
    """
    from importlib import metadata

    try:
        spec_version = metadata.version("bioimageio.spec")
        pydantic_version = metadata.version("pydantic")
    except metadata.PackageNotFoundError:
        return ("bioimage.io export needs bioimageio.core: install microseg with the 'export' "
                "extra (pip install 'microseg[export]')")
    if spec_version.startswith("0.5.12") and _major_minor(pydantic_version) >= (2, 14):
        return (f"bioimageio.spec {spec_version} cannot write packages with pydantic "
                f"{pydantic_version} (it fails serializing the weights entries); install "
                f"pydantic==2.13.5 and pydantic-core==2.46.5 (the last release before that change)")
    return None


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _checked_out_path(out_path: str | Path, overwrite: bool) -> Path:
    out_path = Path(out_path)
    if out_path.suffix != ".zip":
        raise ConfigError(f"a bioimage.io package is a .zip file, found {out_path}; "
                          f"use e.g. {out_path.with_suffix('.zip').name}")
    refuse_existing(out_path, overwrite)
    return out_path


def _trained_model(model: Any) -> Any:
    """A TrainedModel from a model folder, a ``(network, ModelConfig)`` pair or itself."""
    from microseg.models import TrainedModel

    if isinstance(model, TrainedModel):
        return model
    if isinstance(model, (str, Path)):
        return TrainedModel.load(model, which="best", device="cpu")
    network, config = model
    return TrainedModel.from_network(network, config)


def _checked_normalization(normalization: Any) -> Any:
    from microseg.transforms.normalization import PercentileNormalization

    normalization = normalization or PercentileNormalization()
    if normalization.mode != "global":
        raise ConfigError(
            f"normalization mode {normalization.mode!r} cannot be exported: bioimage.io's "
            f"scale_range normalizes each sample, which equals microseg's 'global' mode when the "
            f"sample is the whole image. Export a model trained with mode='global'"
        )
    return normalization


def _per_axis_halo(halo: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    halos = (int(halo),) * ndim if np.isscalar(halo) else tuple(int(h) for h in halo)
    if len(halos) != ndim or min(halos) < 1:
        raise ConfigError(
            f"halo {halo!r}: expected one positive value or {ndim} (one per spatial axis) for a "
            f"{ndim}D model; bioimage.io needs a halo of at least 1"
        )
    return halos


def _checked_test_input(test_input: np.ndarray, config: Any, halos: tuple[int, ...]) -> np.ndarray:
    from microseg.models import size_divisor

    image = np.asarray(test_input)
    divisor = size_divisor(config)
    problems = []
    if image.ndim != config.ndim + 1:
        problems.append(f"shape {image.shape}: expected (C, *spatial) with {config.ndim} spatial "
                        f"axes for this {config.ndim}D model (add a channel axis: image[None])")
    elif image.shape[0] != config.in_channels:
        problems.append(f"{image.shape[0]} channels, the model takes {config.in_channels}")
    else:
        for side, halo in zip(image.shape[1:], halos, strict=True):
            if side % divisor or side <= 2 * halo:
                problems.append(f"spatial side {side}: must be a multiple of {divisor} and larger "
                                f"than twice the halo ({2 * halo}); crop or pad the test image")
    if problems:
        raise DataError("the test input does not fit the model", problems)
    return image.astype(np.float32)


def _stage_files(folder: Path, network: Any, config: Any, image: np.ndarray, normalization: Any,
                 metadata: BioimageioMetadata, halos: tuple[int, ...]
                 ) -> tuple[_PackageFiles, dict[str, Any]]:
    import tifffile
    import torch

    from microseg.export.torchscript import export_torchscript

    files = _PackageFiles(*(folder / name for name in (
        "weights.pt", "weights_torchscript.pt", "test_input.npy", "test_output.npy",
        "sample_input.tif", "sample_output.tif", "cover.png", "README.md")))
    normalized = _normalized_test_input(image, normalization)
    probabilities = _probabilities(network, normalized)
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, files.weights)
    torchscript = export_torchscript(network, normalized[None], files.torchscript)
    np.save(files.test_input, image[None])
    np.save(files.test_output, probabilities[None])
    tifffile.imwrite(files.sample_input, image, photometric="minisblack")
    tifffile.imwrite(files.sample_output, probabilities, photometric="minisblack")
    _write_cover(files.cover, normalized, probabilities)
    files.readme.write_text(_package_readme(config, normalization, metadata, halos, torchscript))
    return files, torchscript


def _normalized_test_input(image: np.ndarray, normalization: Any) -> np.ndarray:
    """``image`` (C, *spatial) normalized as microseg does: percentiles of the whole image."""
    from microseg.transforms.normalization import normalize, percentile_statistics

    low, high = percentile_statistics(image, normalization)
    return np.asarray(normalize(image, low, high, normalization.clip), dtype=np.float32)


def _probabilities(network: Any, normalized: np.ndarray) -> np.ndarray:
    import copy

    import torch

    reference = copy.deepcopy(network).cpu().eval()
    with torch.no_grad():
        logits = reference(torch.from_numpy(normalized[None]))
    return torch.softmax(logits, dim=1)[0].numpy().astype(np.float32)


def _write_cover(path: Path, normalized: np.ndarray, probabilities: np.ndarray) -> None:
    """A 2:1 PNG: the first input channel beside the foreground probability (1 − background)."""
    from microseg.io.images import write_image

    middle = tuple(side // 2 for side in normalized.shape[1:-2])
    image = normalized[(0, *middle)]
    foreground = 1.0 - probabilities[(0, *middle)]
    low, high = np.percentile(image, (1, 99))
    grey = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    side = min(grey.shape)
    square = (slice(0, side), slice(0, side))
    pair = np.concatenate([grey[square], np.clip(foreground[square], 0, 1)], axis=1)
    zoom = max(1, 256 // side)
    pixels = np.kron(pair, np.ones((zoom, zoom)))
    write_image(path, (pixels * 255).round().astype(np.uint8), axes="YX")


def _package_readme(config: Any, normalization: Any, metadata: BioimageioMetadata,
                    halos: tuple[int, ...], torchscript: dict[str, Any]) -> str:
    """The README.md of a package: model, input, output, halo, normalization, validation."""
    axes = "ZYX"[-config.ndim:]
    halo_text = ", ".join(f"{a}: {h}" for a, h in zip(axes, halos, strict=True))
    clip = " then clipped to [0, 1]" if normalization.clip else ""
    return "\n".join([
        f"# {metadata.name}", "", metadata.description, "",
        "## Model", "",
        f"{config.architecture} ({config.ndim}D), features {list(config.channels)}, "
        f"normalization layers: {config.norm} (BatchRenorm is folded into BatchNorm in the "
        f"TorchScript weights; the two are identical in evaluation mode).", "",
        "## Input", "",
        f"{config.in_channels} channel(s), axes batch, channel, {', '.join(axes.lower())}. "
        f"Each channel is normalized with the {normalization.low} and {normalization.high} "
        f"percentiles of the whole image{clip} (bioimage.io `scale_range` per sample). Give the "
        f"whole image as one sample: a consumer that normalizes each tile on its own produces "
        f"tile mismatch. (bioimageio.core pads the image by the halo before computing the "
        f"percentiles; for images much larger than the halo this changes nothing noticeable.)",
        "",
        "## Output", "",
        f"Class probabilities (softmax), channels: {', '.join(_class_names(config, metadata))}.",
        "",
        f"Halo ({halo_text} pixels): predict overlapping tiles and crop this many pixels from "
        f"each side of every tile; with at least this halo the stitched prediction equals the "
        f"whole-image prediction. At the image border the input is padded by the halo, "
        f"mirrored without repeating the edge pixel (`reflect`), as microseg does.", "",
        "## Validation", "",
        "The test input was predicted with PyTorch; the TorchScript weights reproduce that "
        f"output to {torchscript['max_abs_diff']:.2g} (largest absolute difference of the "
        f"logits), and bioimageio.core's test reproduces the test output from both weight "
        f"formats. Validate on your own images by comparing with a few annotated images "
        f"(microseg notebook 05_evaluate).", "",
        *([metadata.documentation, ""] if metadata.documentation else []),
        "## Citation", "",
        *[f"- {text} (doi:{doi})" for text, doi in metadata.citations], "",
    ])


def _model_description(files: _PackageFiles, config: Any, normalization: Any,
                       metadata: BioimageioMetadata, halos: tuple[int, ...]) -> Any:
    """The ``bioimageio.spec`` 0.5 ``ModelDescr`` for staged package files."""
    from bioimageio.spec.model import v0_5 as spec

    return spec.ModelDescr(
        name=metadata.name,
        description=metadata.description,
        authors=[spec.Author(name=name) for name in metadata.authors],
        maintainers=[spec.Maintainer(name=metadata.authors[0],
                                     github_user=metadata.maintainer_github_user)]
        if metadata.maintainer_github_user else [],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in metadata.citations],
        license=spec.LicenseId(metadata.license),
        tags=list(metadata.tags),
        version=metadata.version,
        documentation=spec.FileDescr(source=files.readme),
        covers=[spec.FileDescr(source=files.cover)],
        inputs=[_input_description(files, config, normalization, metadata, halos)],
        outputs=[_output_description(files, config, metadata, halos)],
        weights=_weights_description(files, config),
        config=spec.Config(**{"microseg": {
            "model_config": config.to_dict(),
            "normalization": normalization.to_dict(),
            "halo": list(halos),
        }}),
    )


def _input_description(files: _PackageFiles, config: Any, normalization: Any,
                       metadata: BioimageioMetadata, halos: tuple[int, ...]) -> Any:
    from bioimageio.spec.model import v0_5 as spec

    from microseg.models import required_input_shape, size_divisor

    divisor = size_divisor(config)
    fixed = required_input_shape(config)
    spatial = []
    for index, (axis, halo) in enumerate(zip("zyx"[-config.ndim:], halos, strict=True)):
        smallest = divisor * (2 * halo // divisor + 1)
        size = fixed[index] if fixed else spec.ParameterizedSize(min=smallest, step=divisor)
        spatial.append(spec.SpaceInputAxis(id=spec.AxisId(axis), size=size))
    names = list(metadata.input_channel_names) or [f"channel{c}" for c in range(config.in_channels)]
    steps = [spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
        axes=[a.id for a in spatial], min_percentile=normalization.low,
        max_percentile=normalization.high))]
    if normalization.clip:
        steps.append(spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)))
    return spec.InputTensorDescr(
        id=spec.TensorId("input"),
        description="raw image; normalized by the preprocessing",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=names), *spatial],
        test_tensor=spec.FileDescr(source=files.test_input),
        sample_tensor=spec.FileDescr(source=files.sample_input),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        # mode given explicitly: bioimageio.spec leaves unset defaults out when it saves, and a
        # bare ``{}`` reads back as constant (zero) padding.
        pad=spec.ReflectPadding(mode="reflect"),
        preprocessing=steps,
    )


def _output_description(files: _PackageFiles, config: Any, metadata: BioimageioMetadata,
                        halos: tuple[int, ...]) -> Any:
    from bioimageio.spec.model import v0_5 as spec

    spatial = [
        spec.SpaceOutputAxisWithHalo(
            id=spec.AxisId(axis), halo=halo,
            size=spec.SizeReference(tensor_id=spec.TensorId("input"), axis_id=spec.AxisId(axis)),
        )
        for axis, halo in zip("zyx"[-config.ndim:], halos, strict=True)
    ]
    channel = spec.ChannelAxis(channel_names=_class_names(config, metadata))
    return spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"),
        description="class probabilities (softmax over the channel axis)",
        axes=[spec.BatchAxis(), channel, *spatial],
        test_tensor=spec.FileDescr(source=files.test_output),
        sample_tensor=spec.FileDescr(source=files.sample_output),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel")))],
    )


def _weights_description(files: _PackageFiles, config: Any) -> Any:
    import torch
    from bioimageio.spec.model import v0_5 as spec

    version = spec.Version(torch.__version__.split("+")[0])
    architecture = spec.ArchitectureFromLibraryDescr(
        import_from=ARCHITECTURE_MODULE, callable=spec.Identifier(ARCHITECTURE_CALLABLE),
        kwargs={k: v for k, v in config.to_dict().items()},
    )
    return spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=files.weights, architecture=architecture, pytorch_version=version),
        torchscript=spec.TorchscriptWeightsDescr(
            source=files.torchscript, pytorch_version=version, parent="pytorch_state_dict",
            comment="converted from the state dict with BatchRenorm folded into BatchNorm"),
    )


def _class_names(config: Any, metadata: BioimageioMetadata) -> list[str]:
    if metadata.class_names:
        return list(metadata.class_names)
    if config.out_classes == 2:
        return ["background", "foreground"]
    if config.out_classes == 3:
        return ["background", "foreground", "boundary"]
    return ["background"] + [f"class{k}" for k in range(1, config.out_classes)]
