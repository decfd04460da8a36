"""An Azure Blob container as a datastore: ``azureblob://<container>[/<prefix>]``.

Same layout as a local datastore (CONTRACT section 1): every top-level "folder" under the
prefix is one location. Credentials come from ``AZURE_STORAGE_CONNECTION_STRING`` (Azurite's
development string works); the string is a secret and is never printed or logged.

Cost and consistency:

* :meth:`AzureBlobDatastore.list_locations` is one hierarchical listing (delimiter ``/``),
  so a poll costs about one request per 5,000 locations, not one per blob.
* :meth:`AzureBlobDatastore.list_files` lists one location's blobs with their ETags.
* :meth:`AzureBlobDatastore.local_path` streams a blob to a local cache keyed by the blob
  name and its ETag (written to a temporary file, then renamed), so an unchanged blob is
  downloaded once and a changed blob (new ETag) is downloaded again. It serves the version
  the last :meth:`list_files` saw; without one it asks the service for the current ETag.

Read-only: this module only lists, reads properties and downloads. It never writes,
modifies, leases or deletes anything in the container.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from pathlib import Path, PurePosixPath

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient

from videoanom.data.datastore import Datastore, DatastoreError, FileInfo
from videoanom.names import InvalidLocationName, validate_location

logger = logging.getLogger(__name__)

SCHEME = "azureblob://"
CONNECTION_STRING_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"
CACHE_VARIABLE = "VIDEOANOM_BLOB_CACHE"
DEFAULT_CACHE = Path(".videoanom") / "cache" / "blob"
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

# The SDK logs every request's headers at INFO; keep the console to our own messages.
_http_logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
if _http_logger.level == logging.NOTSET:
    _http_logger.setLevel(logging.WARNING)


class MissingConnectionString(DatastoreError):
    """``AZURE_STORAGE_CONNECTION_STRING`` is not set (nor in ``.env``)."""


def parse_blob_uri(uri: str) -> tuple[str, str]:
    """``azureblob://container/some/prefix/`` -> ``("container", "some/prefix")``."""
    if not uri.startswith(SCHEME):
        raise DatastoreError(f"{uri}: not an {SCHEME}<container>[/<prefix>] URI")
    container, _, prefix = uri.removeprefix(SCHEME).partition("/")
    if not _CONTAINER_NAME.match(container):
        raise DatastoreError(
            f"{uri}: {container!r} is not a valid container name "
            "(3-63 lowercase letters, digits and single hyphens)"
        )
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(part in ("", ".", "..") for part in parts):
        raise DatastoreError(f"{uri}: the prefix must not contain empty, '.' or '..' segments")
    return container, "/".join(parts)


def read_connection_string(explicit: str | None = None) -> str:
    """The connection string: ``explicit``, else the environment, else ``./.env``."""
    if explicit:
        return explicit
    value = os.environ.get(CONNECTION_STRING_VARIABLE, "").strip()
    if not value and Path(".env").is_file():
        from dotenv import dotenv_values

        value = (dotenv_values(".env").get(CONNECTION_STRING_VARIABLE) or "").strip()
    if not value:
        raise MissingConnectionString(
            f"{CONNECTION_STRING_VARIABLE} is not set: an azureblob:// datastore needs the "
            "storage account's connection string in that environment variable (or in .env)"
        )
    return value


def default_cache_dir() -> Path:
    """``VIDEOANOM_BLOB_CACHE`` if set, else ``.videoanom/cache/blob``."""
    return Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE)


def _safe_relative(path: str) -> bool:
    """A blob path relative to its location that cannot escape it or name a folder."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/") or path.endswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _cache_filename(path: str) -> str:
    """A portable file name for ``path`` that keeps its extension (OpenCV needs it)."""
    name = PurePosixPath(path).name
    stem, ext = os.path.splitext(name)
    stem = _UNSAFE_CHARS.sub("_", stem).strip("._")[:80] or "blob"
    ext = _UNSAFE_CHARS.sub("_", ext)[:16]
    return stem + ext


def _etag_folder(etag: str) -> str:
    text = _UNSAFE_CHARS.sub("_", etag.strip().strip('"')).strip("._")
    if not text or len(text) > 64:
        text = hashlib.sha256(etag.encode()).hexdigest()[:32]
    return text


class AzureBlobDatastore(Datastore):
    """A blob container (optionally under a prefix) read through a local download cache."""

    def __init__(
        self,
        uri: str,
        connection_string: str | None = None,
        cache_dir: str | Path | None = None,
        **client_options: object,
    ) -> None:
        self.container_name, self.prefix = parse_blob_uri(str(uri))
        self.uri = SCHEME + self.container_name + (f"/{self.prefix}" if self.prefix else "")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.cache_dir = Path(cache_dir if cache_dir is not None else default_cache_dir())
        self.cache_dir = self.cache_dir.expanduser().resolve()
        secret = read_connection_string(connection_string)
        try:
            service = BlobServiceClient.from_connection_string(secret, **client_options)
        except (ValueError, TypeError):
            # The SDK's message may quote the string: never pass it on.
            raise DatastoreError(
                f"{CONNECTION_STRING_VARIABLE} is not a valid storage connection string"
            ) from None
        self._container: ContainerClient = service.get_container_client(self.container_name)
        self._etags: dict[str, str] = {}
        self.refused: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AzureBlobDatastore({self.uri!r}, cache_dir={str(self.cache_dir)!r})"

    # -- listing --------------------------------------------------------------------------

    def list_locations(self) -> list[str]:
        names, refused = [], {}
        with self._errors("list the locations of"):
            for item in self._container.walk_blobs(name_starts_with=self._base, delimiter="/"):
                if not item.name.endswith("/"):
                    continue  # a blob directly under the prefix is not a location
                name = item.name[len(self._base) : -1]
                if name.startswith((".", "_")):
                    continue
                try:
                    names.append(validate_location(name))
                except InvalidLocationName as error:
                    logger.warning("%s: skipping blob folder %r: %s", self.uri, name, error)
                    refused[name] = str(error)
        self.refused = refused
        return sorted(names)

    def list_files(self, location: str) -> list[FileInfo]:
        location_prefix = self._location_prefix(location)
        files, seen = [], 0
        with self._errors(f"list location {location!r} of"):
            blobs = self._container.list_blobs(
                name_starts_with=location_prefix, include=["metadata"]
            )
            for blob in blobs:
                seen += 1
                if (blob.metadata or {}).get("hdi_isfolder") == "true":
                    continue  # a folder marker (hierarchical namespace accounts)
                rel = blob.name[len(location_prefix) :]
                if rel.endswith("/") and not blob.size:
                    continue  # a zero-byte "folder/" placeholder some tools create
                if not _safe_relative(rel):
                    logger.warning("%s: skipping blob %r (unsafe path)", self.uri, blob.name)
                    continue
                self._etags[blob.name] = blob.etag
                files.append(FileInfo(rel, int(blob.size or 0), blob.etag))
        if not seen:
            raise DatastoreError(f"location {location!r} not found in datastore {self.uri}")
        return sorted(files, key=lambda f: f.path)

    # -- reading --------------------------------------------------------------------------

    def local_path(self, location: str, path: str) -> Path:
        if not _safe_relative(path):
            raise DatastoreError(f"path {path!r} escapes location {location!r}")
        blob_name = self._location_prefix(location) + path
        blob = self._container.get_blob_client(blob_name)
        etag = self._etags.get(blob_name)
        if etag is None:
            with self._errors(f"read {location}/{path} in"):
                etag = blob.get_blob_properties().etag
            self._etags[blob_name] = etag
        cached = self._cache_path(blob_name, path, etag)
        if cached.is_file():
            return cached
        with self._errors(f"download {location}/{path} from"):
            downloader = blob.download_blob(max_concurrency=1)
            # The content belongs to the ETag the download saw (the SDK pins later chunks
            # to it), which may be newer than the listing's.
            etag = downloader.properties.etag or etag
            cached = self._cache_path(blob_name, path, etag)
            if cached.is_file():
                return cached
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.{os.getpid()}-{uuid.uuid4().hex}.part")
            try:
                with open(partial, "wb") as handle:
                    written = downloader.readinto(handle)
                if written != downloader.size:
                    raise DatastoreError(
                        f"download of {location}/{path} from {self.uri} stopped after "
                        f"{written} of {downloader.size} bytes"
                    )
                os.replace(partial, cached)
            finally:
                partial.unlink(missing_ok=True)
        self._etags[blob_name] = etag
        logger.debug("downloaded %s/%s (%d bytes) to %s", location, path, written, cached)
        return cached

    # -- helpers --------------------------------------------------------------------------

    def _location_prefix(self, location: str) -> str:
        validate_location(location)
        return f"{self._base}{location}/"

    def _cache_path(self, blob_name: str, path: str, etag: str) -> Path:
        account = self._container.account_name or ""
        key = hashlib.sha256(f"{account}/{self.container_name}/{blob_name}".encode()).hexdigest()
        return self.cache_dir / key[:2] / key / _etag_folder(etag) / _cache_filename(path)

    def _errors(self, action: str) -> _TranslateErrors:
        return _TranslateErrors(self, action)


class _TranslateErrors:
    """Turn SDK errors into one-line :class:`DatastoreError` messages without secrets."""

    def __init__(self, store: AzureBlobDatastore, action: str) -> None:
        self.store, self.action = store, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> bool:
        if error is None or not isinstance(error, AzureError):
            return False
        where = self.store.uri
        if isinstance(error, ResourceNotFoundError):
            code = getattr(error, "error_code", None) or ""
            if "Container" in str(code):
                reason = f"container {self.store.container_name!r} does not exist"
            else:
                reason = "not found"
        elif isinstance(error, ClientAuthenticationError):
            reason = f"access denied (check {CONNECTION_STRING_VARIABLE})"
        elif isinstance(error, HttpResponseError):
            first = (error.message or "").strip().splitlines()
            reason = f"HTTP {error.status_code}: {first[0] if first else type(error).__name__}"
        else:
            reason = f"{type(error).__name__} (is the storage endpoint reachable?)"
        raise DatastoreError(f"cannot {self.action} {where}: {reason}") from None
