"""Model packages from the bioimage.io model zoo (or any web address), downloaded once and checked.

A model of the zoo is named wherever a pretrained model is asked for (``pretrained_path`` in
notebooks 03 and 04, :func:`microseg.transfer.loading.load_pretrained`) by one of:

- ``"bioimage.io:<id>"`` — a model of the zoo by its id (``"bioimage.io:affable-shark"``), its
  description found at :data:`BIOIMAGEIO_RDF_URL` (the address pattern bioimage.io's own
  ``bioimageio.spec`` 0.5 uses; set ``MICROSEG_BIOIMAGEIO_URL`` to use a mirror);
- an ``https://`` address of a package's description (``…/rdf.yaml`` or ``…bioimageio.yaml``)
  or of a packaged ``.zip``;
- a Zenodo DOI (``"doi:10.5281/zenodo.<record>"`` or ``"10.5281/zenodo.<record>"``), the
  record's files found through Zenodo's API (:data:`ZENODO_RECORD_URL`).

:func:`fetch_package` downloads the description and the weights it lists in a format microseg
reads (PyTorch state dict, TorchScript) into a cache folder (:func:`cache_dir`:
``$MICROSEG_CACHE``, else ``$XDG_CACHE_HOME/microseg``, else ``~/.cache/microseg``), with a
progress bar, checks every weights file against the sha256 the description declares, and only
then moves the package into the cache in one step: a failed, truncated or altered download
leaves nothing behind, and a package in the cache was checked. Later uses read the cache and
need no network. The package is then loaded by the safe loader
(:func:`microseg.transfer.loading.load_bioimageio`: weights only, TorchScript refused unless
allowed, the architecture never imported).

Example
-------
>>> folder = fetch_package("bioimage.io:affable-shark")              # doctest: +SKIP
>>> load_pretrained("bioimage.io:affable-shark", allow_torchscript=True)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from microseg.errors import DataError, WriteError

__all__ = [
    "BIOIMAGEIO_RDF_URL",
    "LOADABLE_FORMATS",
    "ZENODO_RECORD_URL",
    "cache_dir",
    "cached_packages",
    "description_file",
    "fetch_package",
    "is_remote",
    "read_model_description",
]

log = logging.getLogger(__name__)

BIOIMAGEIO_RDF_URL = "https://hypha.aicell.io/bioimage-io/artifacts/{id}/files/rdf.yaml"
"""Where the description of zoo model ``{id}`` is (``MICROSEG_BIOIMAGEIO_URL`` overrides)."""
ZENODO_RECORD_URL = "https://zenodo.org/api/records/{record}"
"""Zenodo's API address of a record: its files and their download links
(``MICROSEG_ZENODO_URL`` overrides)."""
LOADABLE_FORMATS = ("pytorch_state_dict", "torchscript")
"""Weights formats downloaded (the ones microseg loads); others in a package are left out."""
PREFIX = "bioimage.io:"
TIMEOUT = 60.0
"""Seconds without an answer from a server before a download is given up."""
RDF_FILE = "rdf.yaml"
RDF_NAMES = (RDF_FILE, "bioimageio.yaml")
"""Names of a package's description (format 0.4 and 0.5)."""
SOURCE_FILE = "source.json"
"""Written into each cached package: where it came from and the files checked."""
_DOI = re.compile(r"^(?:doi:|https://doi\.org/)?10\.5281/zenodo\.(\d+)$", re.IGNORECASE)


def is_remote(source: Any) -> bool:
    """Whether ``source`` names a package to download (a zoo id, an http(s) address or a
    Zenodo DOI) rather than a local path or a built-in model."""
    if not isinstance(source, str):
        return False
    return source.startswith((PREFIX, "https://", "http://")) or bool(_DOI.match(source))


def cache_dir() -> Path:
    """Where downloaded packages are kept: ``$MICROSEG_CACHE/models``, else
    ``$XDG_CACHE_HOME/microseg/models``, else ``~/.cache/microseg/models``."""
    if os.environ.get("MICROSEG_CACHE"):
        return Path(os.environ["MICROSEG_CACHE"]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "microseg" / "models"


def cached_packages(cache: str | Path | None = None) -> list[dict[str, Any]]:
    """The packages downloaded into ``cache`` (None: :func:`cache_dir`): ``source`` (what they
    were asked for by), ``folder`` and ``size_mb``, sorted by source."""
    cache = Path(cache) if cache is not None else cache_dir()
    rows = []
    for record in sorted(cache.glob(f"*/{SOURCE_FILE}")):
        try:
            source = json.loads(record.read_text(encoding="utf-8"))["source"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        size = sum(p.stat().st_size for p in record.parent.iterdir() if p.is_file())
        rows.append({"source": source, "folder": str(record.parent),
                     "size_mb": round(size / 1e6, 2)})
    return sorted(rows, key=lambda row: row["source"])


def fetch_package(source: str, *, cache: str | Path | None = None, progress: bool = True,
                  refresh: bool = False) -> Path:
    """The cached folder of the package ``source`` names (see the module docstring),
    downloaded and checked first if it is not in the cache.

    Parameters
    ----------
    source : ``"bioimage.io:<id>"``, an https address of an ``rdf.yaml`` or ``.zip``, or a
        Zenodo DOI.
    cache : the cache folder (None: :func:`cache_dir`).
    progress : show a progress bar per file.
    refresh : download again even when the package is in the cache.

    Returns
    -------
    A folder holding ``rdf.yaml`` and the weights files it lists (their sources rewritten to
    the local file names), ready for :func:`microseg.transfer.loading.load_bioimageio`.

    Raises
    ------
    DataError
        The server cannot be reached or answers with an error (the address and the answer
        named), the id is unknown, a download stops early, a weights file differs from the
        sha256 its description declares, or the description is not a model's.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    folder = cache / _cache_key(source)
    if (folder / SOURCE_FILE).is_file() and not refresh:
        log.info("bioimage.io package %s: from the cache, %s", source, folder)
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache))
    try:
        files = _download_package(source, staging, progress)
        (staging / SOURCE_FILE).write_text(json.dumps({"source": source, "files": files},
                                                      indent=2) + "\n")
        if (folder / SOURCE_FILE).is_file() and not refresh:
            return folder  # another process finished the same download meanwhile
        if folder.exists():  # a damaged earlier copy, or refresh
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("bioimage.io package %s: downloaded and checked, %s", source, folder)
    return folder


def _cache_key(source: str) -> str:
    """A folder name for ``source``: readable where it can be, unique always."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    if source.startswith(PREFIX):
        name = source[len(PREFIX):]
    elif match := _DOI.match(source):
        name = f"zenodo-{match.group(1)}"
    else:
        name = PurePosixPath(urllib.parse.urlparse(source).path).parent.name or "package"
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('.-')[:60] or 'package'}-{digest}"


def _download_package(source: str, staging: Path, progress: bool) -> dict[str, str]:
    """Download ``source`` into ``staging``; ``{file: sha256}`` of the weights checked."""
    if source.startswith(PREFIX):
        zoo_id = source[len(PREFIX):].strip("/")
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?", zoo_id):
            raise DataError(f"{source!r}: a bioimage.io id is a name such as "
                            f"'bioimage.io:affable-shark'")
        pattern = os.environ.get("MICROSEG_BIOIMAGEIO_URL", BIOIMAGEIO_RDF_URL)
        return _download_described(pattern.format(id=zoo_id), {}, staging, source, progress)
    if match := _DOI.match(source):
        rdf_url, links = _zenodo_files(match.group(1), source)
        return _download_described(rdf_url, links, staging, source, progress)
    if urllib.parse.urlparse(source).path.endswith(".zip"):
        return _download_zip(source, staging, progress)
    return _download_described(source, {}, staging, source, progress)


def _download_described(rdf_url: str, links: Mapping[str, str], staging: Path, source: str,
                        progress: bool) -> dict[str, str]:
    """The description at ``rdf_url`` and its loadable weights; ``links`` maps file names to
    their addresses where they are not beside the description (Zenodo)."""
    import yaml

    rdf_path = staging / RDF_FILE
    _download(rdf_url, rdf_path, source, progress=False)
    rdf = read_model_description(rdf_path, source)
    files = {}
    for _, entry in _loadable_weights(rdf):
        remote = str(entry["source"])
        name = _local_name(remote, source)
        url = links.get(name) or urllib.parse.urljoin(rdf_url, remote)
        _download(url, staging / name, source, progress)
        files[name] = _checked(staging / name, entry.get("sha256"), url, source)
        entry["source"] = name
    if not files:
        raise DataError(f"{source}: the package has no weights microseg can read",
                        [f"formats in it: {', '.join(rdf['weights']) or 'none'}; microseg "
                         f"reads {', '.join(LOADABLE_FORMATS)}"])
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    return files


def _download_zip(url: str, staging: Path, progress: bool) -> dict[str, str]:
    """A packaged ``.zip``: downloaded, extracted safely, its weights checked against its
    own description."""
    from microseg.io.archives import safe_extract

    with tempfile.TemporaryDirectory(prefix="microseg-download-") as folder:
        archive = Path(folder) / "package.zip"
        _download(url, archive, url, progress)
        safe_extract(archive, staging)
    found = description_file(staging)
    if found is None:
        raise DataError(f"{url} is not a bioimage.io package: the .zip holds no rdf.yaml")
    rdf = read_model_description(found, url)
    files = {}
    for _, entry in _loadable_weights(rdf):
        name = str(entry["source"])
        path = (staging / name).resolve()
        if path.is_relative_to(staging.resolve()) and path.is_file():
            files[name] = _checked(path, entry.get("sha256"), url, url)
    return files


def description_file(folder: Path) -> Path | None:
    """The package description in ``folder``: ``rdf.yaml``, ``bioimageio.yaml`` or a
    ``*.bioimageio.yaml``; None when there is none (not a package)."""
    folder = Path(folder)
    found = [folder / n for n in RDF_NAMES if (folder / n).is_file()]
    found += sorted(folder.glob("*.bioimageio.yaml"))
    return found[0] if found else None


def _loadable_weights(rdf: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(format, entry)`` of the description's weights microseg reads, with a source."""
    return [(fmt, entry) for fmt, entry in rdf["weights"].items()
            if fmt in LOADABLE_FORMATS and isinstance(entry, dict) and entry.get("source")]


def read_model_description(path: Path, source: Any) -> dict[str, Any]:
    """The package description (``rdf.yaml``) at ``path``, read with ``yaml.safe_load``:
    DataError naming ``source`` unless it is valid YAML describing a model with weights."""
    import yaml

    try:
        rdf = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(f"{source}: {Path(path).name} is not valid YAML",
                        [str(err).splitlines()[0]]) from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        kind = rdf.get("type") if isinstance(rdf, dict) else type(rdf).__name__
        raise DataError(f"{source} describes a {kind!r}, not a model; give a bioimage.io model "
                        f"package")
    if not isinstance(rdf.get("weights"), dict):
        raise DataError(f"{source}: {Path(path).name} lists no weights")
    return rdf


def _local_name(remote: str, source: str) -> str:
    """The file name a weights file gets in the cache (its last path part)."""
    name = PurePosixPath(urllib.parse.urlparse(remote).path).name
    if not name or name in (".", "..", RDF_FILE, SOURCE_FILE):
        raise DataError(f"{source}: weights source {remote!r} is not a file name")
    return name


def _checked(path: Path, expected: Any, url: str, source: str) -> str:
    """The sha256 of ``path``, which must be ``expected`` (the description's) when given."""
    from microseg.runs import sha256_of

    found = sha256_of(path)
    if expected is None:
        log.warning("%s: the package declares no sha256 for %s; it cannot be checked",
                    source, path.name)
    elif found != str(expected).lower():
        raise DataError(f"{source}: {path.name} downloaded from {url} is not the file the "
                        f"package describes: its sha256 differs; nothing was kept",
                        [f"declared {str(expected).lower()}", f"received {found}",
                         "download it again later; if it persists, the package was changed "
                         "after it was described: tell its authors"])
    return found


def _download(url: str, target: Path, source: str, progress: bool) -> None:
    """``url`` into ``target``; DataError when the server fails or the answer is cut short."""
    request = urllib.request.Request(url, headers={"User-Agent": "microseg"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            expected = answer.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            received = _copy(answer, target, expected, progress, target.name)
    except WriteError:
        raise
    except urllib.error.HTTPError as err:
        hint = ("no such model or file: check the id or address" if err.code == 404 else
                "the server failed: try again later")
        raise DataError(f"{source}: downloading {url} failed with HTTP {err.code} "
                        f"({err.reason}); {hint}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError,
            http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(f"{source}: downloading {url} failed ({type(err).__name__}: {reason}); "
                        f"check the network connection (already downloaded packages are used "
                        f"from {cache_dir()} without one)") from None
    if expected is not None and received != expected:
        raise DataError(f"{source}: the download of {url} stopped after {received:,} of "
                        f"{expected:,} bytes; nothing was kept, try again")


def _copy(answer: Any, target: Path, expected: int | None, progress: bool, name: str) -> int:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=expected, desc=f"downloading {name}", unit="B", unit_scale=True,
                   mininterval=1.0, dynamic_ncols=True)
    from microseg.runs import writing

    received = 0
    try:
        with writing(target), open(target, "wb") as stream:
            while True:
                try:
                    block = answer.read(1 << 16)
                except http.client.IncompleteRead as err:
                    block = err.partial
                    stream.write(block)
                    received += len(block)
                    break
                if not block:
                    break
                stream.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return received


def _zenodo_files(record: str, source: str) -> tuple[str, dict[str, str]]:
    """The address of the record's package description and ``{file name: address}``."""
    api = os.environ.get("MICROSEG_ZENODO_URL", ZENODO_RECORD_URL).format(record=record)
    with tempfile.TemporaryDirectory(prefix="microseg-download-") as folder:
        listing = Path(folder) / "record.json"
        _download(api, listing, source, progress=False)
        try:
            entries = json.loads(listing.read_text(encoding="utf-8")).get("files") or []
            links = {str(e["key"]): str(e["links"]["self"]) for e in entries}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DataError(f"{source}: {api} is not a Zenodo record listing its files") from None
    descriptions = [n for n in links if n in ("rdf.yaml", "bioimageio.yaml")
                    or n.endswith((".rdf.yaml", ".bioimageio.yaml"))]
    if not descriptions:
        raise DataError(f"{source}: Zenodo record {record} holds no bioimage.io model "
                        f"description", [f"files: {', '.join(sorted(links)) or 'none'}"])
    return links[sorted(descriptions)[0]], links
