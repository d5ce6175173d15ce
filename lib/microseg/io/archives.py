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

import zipfile

__all__ = ["MAX_COMPRESSION_RATIO", "MAX_PACKAGE_BYTES", "MAX_PACKAGE_MEMBERS", "check_zip_size",
           "size_text"]

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
