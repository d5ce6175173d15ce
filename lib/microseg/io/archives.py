"""Limits on what a zip archive from elsewhere may unpack: checked from its directory, before
anything is read or extracted, so a zip bomb (a small file expanding to gigabytes) cannot fill
the memory or the disk. Used for bioimage.io packages and Fiji ROI sets.

Example
-------
>>> import io, zipfile
>>> buffer = io.BytesIO()
>>> with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
...     archive.writestr("zeros.bin", bytes(100 * 2**20))
>>> problem, = check_zip_size(zipfile.ZipFile(buffer))
>>> problem.startswith("100.0 MiB once extracted from"), problem.endswith("(a zip bomb)")
(True, True)
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from microseg.errors import DataError

__all__ = ["MAX_COMPRESSION_RATIO", "MAX_PACKAGE_BYTES", "MAX_PACKAGE_MEMBERS",
           "check_zip_members", "check_zip_size", "safe_extract", "size_text"]

MAX_PACKAGE_BYTES = 4 * 2**30
"""Largest total size of an archive's files once extracted (4 GiB)."""
MAX_PACKAGE_MEMBERS = 10_000
"""Most files an archive may hold."""
MAX_COMPRESSION_RATIO = 100
"""Archives above 64 MiB extracted must be at most this many times their compressed size:
weights and ROI coordinates hardly compress (about 1.1–5×), a zip bomb's zeros about 1000×."""
_RATIO_FROM_BYTES = 64 * 2**20


def check_zip_size(archive: zipfile.ZipFile, max_bytes: int = MAX_PACKAGE_BYTES,
                   max_members: int = MAX_PACKAGE_MEMBERS,
                   max_ratio: float = MAX_COMPRESSION_RATIO) -> list[str]:
    """Problems that make unpacking ``archive`` exhaust memory or disk (empty if none).

    More than ``max_members`` members, more than ``max_bytes`` in all once extracted, or (above
    64 MiB) more than ``max_ratio`` times the compressed size. Read from the zip's directory;
    Python's zipfile never returns more bytes for a member than the directory declares.
    """
    infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    packed = sum(info.compress_size for info in infos)
    problems = []
    if len(infos) > max_members:
        problems.append(f"{len(infos)} members, more than the {max_members} allowed")
    if total > max_bytes:
        problems.append(f"{size_text(total)} once extracted, more than the "
                        f"{size_text(max_bytes)} allowed")
    if total > _RATIO_FROM_BYTES and total > max_ratio * max(packed, 1):
        problems.append(f"{size_text(total)} once extracted from {size_text(packed)}: "
                        f"{total / max(packed, 1):.0f} times smaller packed, more than the "
                        f"{max_ratio:g} times of real data (a zip bomb)")
    return problems


def size_text(n_bytes: float) -> str:
    """A byte count for a person: ``"1.5 GiB"``, ``"300 bytes"``."""
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f} {unit}"
    return f"{n_bytes:.0f} bytes"


def check_zip_members(archive: zipfile.ZipFile) -> list[str]:
    """Problems that make extracting ``archive`` unsafe, one line per member (empty if safe).

    Refused: absolute paths (``/x``, ``C:\\x``), ``..`` components, backslashes, and symbolic
    links, any of which could write outside the extraction folder.
    """
    problems = []
    for info in archive.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            problems.append(f"{name!r}: absolute path")
        elif ".." in parts or "\\" in name:
            problems.append(f"{name!r}: leaves the package folder ('..' or '\\')")
        elif stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"{name!r}: symbolic link")
    return problems


def safe_extract(zip_path: str | Path, destination: str | Path,
                 max_bytes: int | None = None, max_members: int | None = None) -> Path:
    """Extract ``zip_path`` into ``destination`` after checking every member; returns it.

    Raises :class:`DataError` before anything is written: listing every unsafe member (see
    :func:`check_zip_members`), when the archive is too large or compressed like a zip bomb
    (see :func:`microseg.io.archives.check_zip_size`; ``max_bytes``, ``max_members``, None:
    its defaults), when the destination's disk
    has less free space than the extracted files need, or when the file is not a zip archive.
    A damaged member found while extracting raises DataError too (the destination keeps what
    was extracted; callers extract into a new temporary folder).
    """
    import shutil

    from microseg.runs import writing

    zip_path, destination = Path(zip_path), Path(destination)
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path} is not a zip archive; a bioimage.io package is a .zip file "
                        f"or a folder with rdf.yaml")
    with zipfile.ZipFile(zip_path) as archive:
        problems = check_zip_members(archive)
        if problems:
            raise DataError(f"{zip_path} was not extracted: {len(problems)} member(s) would be "
                            f"written outside the extraction folder; the package may be malicious",
                            problems)
        problems = check_zip_size(archive, max_bytes or MAX_PACKAGE_BYTES,
                                  max_members or MAX_PACKAGE_MEMBERS)
        if problems:
            raise DataError(f"{zip_path} was not extracted: it is larger than a model package "
                            f"should be; if you trust it, extract it yourself and give the "
                            f"folder", problems)
        needed = sum(info.file_size for info in archive.infolist())
        free = shutil.disk_usage(_existing(destination)).free
        if needed > free:
            raise DataError(f"{zip_path} was not extracted: it needs {size_text(needed)} but "
                            f"the disk holding {destination} has {size_text(free)} free; free space "
                            f"there or set TMPDIR to a folder on a larger disk")
        try:
            with writing(destination):
                archive.extractall(destination)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as err:
            raise DataError(f"{zip_path}: a member is damaged or uses an unsupported "
                            f"compression ({err}); download the package again") from None
    return destination


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
