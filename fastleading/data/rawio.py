"""Helpers shared by the dataset loaders: locating raw files and reporting bad ones."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from fastleading.errors import FastleadingError


def data_root(root: str | None) -> Path:
    """The data root folder (``data.root``, else $FASTLEADING_DATA, else ../shared/data)."""
    from fastleading.config import default_data_root

    path = Path(root if root else default_data_root()).expanduser()
    if not path.is_dir():
        raise FastleadingError(f"data root '{path}' does not exist (set data.root or $FASTLEADING_DATA "
                               f"to the folder that holds the datasets)")
    return path


def find_file(candidates: Sequence[Path], what: str) -> Path:
    """The first existing path of ``candidates``, else an error naming them all."""
    for p in candidates:
        if p.is_file():
            return p
    names = " or ".join(f"'{p}'" for p in candidates)
    raise FastleadingError(f"{what}: file not found; expected {names}")


class _TextInArchive(io.TextIOWrapper):
    """The text of a tar member; closing it also closes the archive and the file under it."""

    def __init__(self, member: IO[bytes], *owned: IO | tarfile.TarFile | gzip.GzipFile):
        super().__init__(member, encoding="utf-8", newline="")
        self._owned = owned

    def close(self) -> None:
        try:
            super().close()
        finally:
            for f in self._owned:
                f.close()


def _is_tar(head: bytes) -> bool:
    """Whether ``head`` (a file's first 512 bytes) is a valid ustar / GNU tar header."""
    if len(head) < tarfile.BLOCKSIZE or head[257:262] != b"ustar":
        return False
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")  # checks the header's checksum
    except tarfile.HeaderError:
        return False
    return True


def open_text(path: Path) -> IO[str]:
    """Open a text file for reading, transparently decompressing ``.gz`` and unpacking a
    tar archive (the text of its first regular file), whatever the file's name says.

    OGB's ``titleabs.tsv.gz`` is such a tar inside a gzip stream: read as plain text, a
    512-byte tar header would be glued to its first line and NUL padding to its last.
    """
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115 (returned, or closed below)
    try:
        if not _is_tar(raw.read(tarfile.BLOCKSIZE)):
            raw.seek(0)
            return io.TextIOWrapper(raw, encoding="utf-8", newline="")
        raw.seek(0)
        archive = tarfile.open(fileobj=raw, mode="r:")  # noqa: SIM115 (returned inside the reader); headers only up to the first file
        member = archive.next()
        while member is not None and not member.isfile():
            member = archive.next()
        if member is None:
            archive.close()
            raise FastleadingError(f"{path}: a tar archive without a file; expected the text file inside it")
        text = archive.extractfile(member)
        assert text is not None  # a regular file (member.isfile()) always has a reader
        return _TextInArchive(text, archive, raw)
    except BaseException:
        raw.close()
        raise


def fingerprint(paths: Sequence[Path]) -> list[list]:
    """(path, size, mtime) of each input file: a cache key that changes when the data does."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out
