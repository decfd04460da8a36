"""Where location data comes from: one interface, a local folder implementation.

Readers only need three things from a datastore: the locations, the files of a location,
and a local path to read one file from. A blob container implements the same three
(downloading to a cache), so data_prep never knows which one it reads.
The project only ever reads a datastore: nothing here writes, moves or deletes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from videoanom.names import InvalidLocationName, validate_location

logger = logging.getLogger(__name__)


class DatastoreError(ValueError):
    """A datastore URI or location that cannot be read."""


@dataclass(frozen=True)
class FileInfo:
    """One file of a location: path relative to the location (posix), size and version."""

    path: str
    size: int
    version: str


class Datastore(ABC):
    """Read-only access to a datastore of locations."""

    uri: str
    # Unsafe top-level names seen by the last list_locations(), with the reason, so the
    # master can report them; they are never used in a path or a model name.
    refused: dict[str, str]

    @abstractmethod
    def list_locations(self) -> list[str]:
        """Top-level folder names; each is one location (unsafe names go to ``refused``)."""

    @abstractmethod
    def list_files(self, location: str) -> list[FileInfo]:
        """Every file under a location, recursively, sorted by path."""

    @abstractmethod
    def local_path(self, location: str, path: str) -> Path:
        """A local file holding the content of ``location/path``, to be read only."""

    def file_digest(self, location: str, path: str) -> str:
        """sha256 of one file's content (used for the data fingerprint)."""
        digest = hashlib.sha256()
        with open(self.local_path(location, path), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


class LocalDatastore(Datastore):
    """A folder on this machine; files are read in place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self.refused = {}

    def list_locations(self) -> list[str]:
        if not self.root.is_dir():
            raise DatastoreError(f"datastore folder {self.root} does not exist")
        names, self.refused = [], {}
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name.startswith((".", "_")):
                continue
            try:
                names.append(validate_location(entry.name))
            except InvalidLocationName as error:
                logger.warning("ignoring folder %r in %s: %s", entry.name, self.root, error)
                self.refused[entry.name] = str(error)
        return names

    def _location_dir(self, location: str) -> Path:
        validate_location(location)
        folder = self.root / location
        if not folder.is_dir():
            raise DatastoreError(f"location {location!r} not found in datastore {self.root}")
        return folder

    def list_files(self, location: str) -> list[FileInfo]:
        folder = self._location_dir(location)
        files = []
        for dirpath, _dirnames, filenames in os.walk(folder):
            for filename in filenames:
                full = Path(dirpath) / filename
                stat = full.stat()
                rel = full.relative_to(folder).as_posix()
                files.append(FileInfo(rel, stat.st_size, str(stat.st_mtime_ns)))
        return sorted(files, key=lambda f: f.path)

    def local_path(self, location: str, path: str) -> Path:
        folder = self._location_dir(location)
        full = (folder / path).resolve()
        if folder.resolve() not in full.parents:
            raise DatastoreError(f"path {path!r} escapes location {location!r}")
        return full


def open_datastore(uri: str | Path, cache_dir: str | Path | None = None) -> Datastore:
    """Open a datastore from a URI: a local folder, or ``azureblob://container[/prefix]``.

    A blob datastore downloads into ``cache_dir``: default ``VIDEOANOM_BLOB_CACHE`` if set,
    else ``.videoanom/cache/blob``; its connection string comes from
    ``AZURE_STORAGE_CONNECTION_STRING``.
    """
    text = str(uri)
    if text.startswith("azureblob://"):
        from videoanom.data.blob import AzureBlobDatastore

        cache = cache_dir or os.environ.get("VIDEOANOM_BLOB_CACHE") or ".videoanom/cache/blob"
        return AzureBlobDatastore(text, cache_dir=cache)
    if "://" in text and not text.startswith("file://"):
        raise DatastoreError(f"{text}: unknown datastore scheme (use a folder or azureblob://)")
    return LocalDatastore(text.removeprefix("file://"))
