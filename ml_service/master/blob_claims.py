"""Per-location claims as Azure Blob leases, so masters on different machines never train
one location at once.

The datastore is read-only to a master, so claims live in their own container (default
``videoanom-claims``) of the same storage account: one empty blob per location, named
``<prefix>/<slug>`` (``prefix`` is the datastore's ``<container>[/<prefix>]`` when built by
:func:`ml_service.master.claims.open_claims`; the slug is
:func:`videoanom.names.normalise_location` of the validated name, so names that share a
model name share a claim).

Holding a claim means holding the blob's lease. The storage service grants a lease to one
client at a time, so exactly one of any number of concurrent claimers wins. Leases are
finite (15-60 s, never infinite): a holder that dies stops renewing and its claim expires
by itself. A live holder's :class:`BlobLeaseClaim` renews the lease from a daemon thread
every ``lease_duration / 3`` seconds until released; if the lease is lost (taken by another
claimer after an expiry, broken by an operator) the thread logs an error and sets
:attr:`BlobLeaseClaim.lost`; it never raises into the process.

While holding the lease the holder writes its record (host, pid, owner token, created
time) into the blob's metadata; :meth:`BlobLeaseClaims.holder` reads it back while the blob
is leased. The connection string is a secret: it is never put in a message or a log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient, ContainerClient

from ml_service.master.claims import DEFAULT_CLAIMS_CONTAINER, ClaimError, _KeptAlive
from videoanom.data.blob import CONNECTION_STRING_VARIABLE, read_connection_string
from videoanom.data.datastore import DatastoreError
from videoanom.names import normalise_location, validate_location

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60
MIN_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60
_MAX_ATTEMPTS = 4
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# Lease states in which somebody holds the blob ("breaking": until the break period ends).
_HELD_STATES = {"leased", "breaking"}
# Answers to acquire that mean "somebody else holds it".
_HELD_CODES = {"LeaseAlreadyPresent", "LeaseIsBreakingAndCannotBeAcquired"}
# Answers to renew/release that mean our lease is gone for good (not a transient failure).
_LOST_CODES = {
    "LeaseIdMismatchWithLeaseOperation",
    "LeaseNotPresentWithLeaseOperation",
    "LeaseIsBrokenAndCannotBeRenewed",
    "LeaseLost",
    "BlobNotFound",
    "ContainerNotFound",
}
_EXISTS_CODES = {"BlobAlreadyExists", "LeaseIdMissing"}


def _code(error: HttpResponseError) -> str:
    """The storage error code as a plain string ("" if none)."""
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _ascii(text: str) -> str:
    """Metadata travels in HTTP headers: ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


class BlobLeaseClaim(_KeptAlive):
    """A held lease on one location's claim blob; release it (or leave the ``with`` block).

    Renewed by a background daemon thread (started by :meth:`BlobLeaseClaims.try_claim`)
    until :meth:`release`. Check :attr:`lost` to learn whether the lease was lost meanwhile.
    """

    def __init__(
        self,
        location: str,
        blob: BlobClient,
        lease_id: str,
        owner: str,
        lease_duration: int,
    ) -> None:
        self.location = location
        self.blob_name = blob.blob_name
        self.container_name = blob.container_name
        self.owner = owner
        self.lease_duration = lease_duration
        self._blob = blob
        self._lease_id = lease_id
        self._released = False

    def __repr__(self) -> str:
        return (
            f"BlobLeaseClaim({self.location!r}, {self.container_name}/{self.blob_name}, "
            f"owner={self.owner!r}, lost={self.lost}, released={self._released})"
        )

    def __enter__(self) -> BlobLeaseClaim:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @property
    def released(self) -> bool:
        return self._released

    def _lease(self) -> BlobLeaseClient:
        # A fresh client per call: the SDK forgets a lease client's id after release.
        return BlobLeaseClient(self._blob, lease_id=self._lease_id)

    def _beat(self) -> None:
        """Renew once: :class:`ClaimError` if the lease is gone for good,
        :class:`_RenewFailed` if the renewal failed for a possibly transient reason."""
        if self._released:
            raise ClaimError(f"claim on {self.location} was released")
        try:
            self._lease().renew()
        except HttpResponseError as error:
            code = _code(error)
            if code in _LOST_CODES:
                raise ClaimError(
                    f"lease on {self.container_name}/{self.blob_name} is gone ({code})"
                ) from None
            raise _RenewFailed(_describe(error)) from None
        except AzureError as error:
            raise _RenewFailed(_describe(error)) from None

    def heartbeat(self) -> None:
        """Renew the lease now; :class:`ClaimError` if it is lost or cannot be renewed."""
        try:
            self._beat()
        except _RenewFailed as error:
            raise ClaimError(
                f"cannot renew the lease on {self.location} in claims container "
                f"{self.container_name!r}: {error}"
            ) from None

    def release(self) -> None:
        """Stop renewing and release the lease. Idempotent; never raises (an expired or
        taken-over lease is only logged: it no longer protects anything anyway)."""
        if self._released:
            return
        self._stop_keepalive()
        self._released = True
        try:
            self._lease().release()
        except HttpResponseError as error:
            if _code(error) in _LOST_CODES:
                logger.warning(
                    "claim on %s had already expired or been taken over (%s); nothing to release",
                    self.location,
                    _code(error),
                )
            else:
                logger.warning(
                    "could not release the claim on %s (%s); it expires by itself within %d s",
                    self.location,
                    _describe(error),
                    self.lease_duration,
                )
        except AzureError as error:
            logger.warning(
                "could not release the claim on %s (%s); it expires by itself within %d s",
                self.location,
                _describe(error),
                self.lease_duration,
            )
        else:
            logger.info("released claim on %s", self.location)


class BlobLeaseClaims:
    """Claims kept as blob leases in container ``container`` of one storage account.

    Same interface as :class:`ml_service.master.claims.LocalClaims`: :meth:`try_claim`
    returns a held :class:`BlobLeaseClaim` or None, :meth:`holder` the current holder's
    record or None. Safe to share between threads.
    """

    def __init__(
        self,
        connection_string: str | None = None,
        container: str = DEFAULT_CLAIMS_CONTAINER,
        prefix: str = "",
        lease_duration: int = DEFAULT_LEASE_SECONDS,
        renew_interval: float | None = None,
        **client_options: Any,
    ) -> None:
        if not _CONTAINER_NAME.match(container or ""):
            raise ClaimError(
                f"claims container {container!r} is not a valid container name "
                "(3-63 lowercase letters, digits and single hyphens)"
            )
        prefix = (prefix or "").strip("/")
        parts = prefix.split("/") if prefix else []
        if any(part in ("", ".", "..") or "\\" in part for part in parts):
            raise ClaimError(f"claims prefix {prefix!r} has an empty, '.' or '..' segment")
        if isinstance(lease_duration, bool) or not isinstance(lease_duration, int):
            raise ValueError(f"lease_duration must be whole seconds, not {lease_duration!r}")
        if not MIN_LEASE_SECONDS <= lease_duration <= MAX_LEASE_SECONDS:
            raise ValueError(
                f"lease_duration must be {MIN_LEASE_SECONDS}-{MAX_LEASE_SECONDS} s "
                f"(never infinite, so a dead holder's claim expires), not {lease_duration}"
            )
        if renew_interval is None:
            renew_interval = lease_duration / 3
        if not 0 < renew_interval < lease_duration:
            raise ValueError(
                f"renew_interval must be between 0 and the lease duration, not {renew_interval!r}"
            )
        self.container_name = container
        self.prefix = "/".join(parts)
        self.lease_duration = lease_duration
        self.renew_interval = float(renew_interval)
        self.host = _ascii(socket.gethostname())
        try:
            secret = read_connection_string(connection_string)
        except DatastoreError as error:  # its message names the variable, not the value
            raise ClaimError(str(error)) from None
        try:
            service = BlobServiceClient.from_connection_string(secret, **client_options)
        except (ValueError, TypeError):
            # The SDK's message may quote the string: never pass it on.
            raise ClaimError(
                f"{CONNECTION_STRING_VARIABLE} is not a valid storage connection string"
            ) from None
        self._container: ContainerClient = service.get_container_client(container)
        self._container_ready = False
        self._container_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"BlobLeaseClaims(container={self.container_name!r}, prefix={self.prefix!r}, "
            f"lease_duration={self.lease_duration})"
        )

    def blob_name(self, location: str) -> str:
        """The claim blob of a location; names are validated before they touch a blob name."""
        validate_location(location)
        slug = normalise_location(location)
        return f"{self.prefix}/{slug}" if self.prefix else slug

    def holder(self, location: str) -> dict[str, Any] | None:
        """The holder's record (host, pid, owner, created, lease_seconds; plus lease_state
        and lease_duration) while the claim blob is leased, else None."""
        blob = self._container.get_blob_client(self.blob_name(location))
        with self._errors(f"read the claim on {location!r} in"):
            try:
                properties = blob.get_blob_properties()
            except ResourceNotFoundError:  # no claim blob (or no container) yet
                return None
        lease = properties.lease
        if lease is None or lease.state not in _HELD_STATES:
            return None
        record: dict[str, Any] = dict(properties.metadata or {})
        if str(record.get("pid", "")).isdigit():
            record["pid"] = int(record["pid"])
        for key in ("created", "lease_seconds"):
            with contextlib.suppress(KeyError, ValueError):
                record[key] = float(record[key])
        record["lease_state"] = lease.state
        record["lease_duration"] = lease.duration
        return record

    def try_claim(self, location: str) -> BlobLeaseClaim | None:
        """Take the lease on ``location``'s claim blob; None if another holder has it.

        The returned claim's renewer thread is already running; release the claim (or use
        it as a context manager) to stop it and give the lease back.
        """
        blob = self._container.get_blob_client(self.blob_name(location))
        owner = uuid.uuid4().hex
        with self._errors(f"claim {location!r} in"):
            self._ensure_container()
            lease = self._acquire(blob)
            if lease is None:
                return None
            record = {
                "host": self.host,
                "pid": str(os.getpid()),
                "owner": owner,
                "created": f"{time.time():.3f}",
                "lease_seconds": str(self.lease_duration),
            }
            try:
                blob.set_blob_metadata(record, lease=lease)
            except BaseException:
                with contextlib.suppress(AzureError):  # else it expires by itself
                    lease.release()
                raise
        claim = BlobLeaseClaim(location, blob, lease.id, owner, self.lease_duration)
        claim.start_keepalive(self.renew_interval, expires_after=self.lease_duration)
        logger.info("claimed %s (lease on %s/%s)", location, self.container_name, claim.blob_name)
        return claim

    # -- helpers --------------------------------------------------------------------------

    def _ensure_container(self, recheck: bool = False) -> None:
        """Create the claims container on first use (another master may race us: fine)."""
        with self._container_lock:
            if self._container_ready and not recheck:
                return
            if not self._container.exists():
                try:
                    self._container.create_container()
                    logger.info("created claims container %s", self.container_name)
                except ResourceExistsError:
                    pass
            self._container_ready = True

    def _acquire(self, blob: BlobClient) -> BlobLeaseClient | None:
        """Acquire the blob's lease, creating the blob if needed; None if someone holds it."""
        for _ in range(_MAX_ATTEMPTS):
            lease = BlobLeaseClient(blob)
            try:
                lease.acquire(lease_duration=self.lease_duration)
                return lease
            except HttpResponseError as error:
                code = _code(error)
                if code in _HELD_CODES:
                    return None
                if code == "BlobNotFound":
                    self._create_blob(blob)
                elif code == "ContainerNotFound":  # deleted since we checked
                    self._ensure_container(recheck=True)
                else:
                    raise
        raise ClaimError(
            f"claim blob {blob.blob_name} in container {self.container_name!r} keeps "
            "vanishing; is something deleting claims?"
        )

    def _create_blob(self, blob: BlobClient) -> None:
        try:
            blob.upload_blob(b"", overwrite=False)
        except HttpResponseError as error:
            if _code(error) not in _EXISTS_CODES:  # another claimer created it first
                raise

    def _errors(self, action: str) -> _TranslateErrors:
        return _TranslateErrors(self.container_name, action)


class _RenewFailed(RuntimeError):
    """A renewal that failed for a possibly transient reason (the keep-alive retries)."""


def _describe(error: AzureError) -> str:
    """A one-line reason without secrets."""
    if isinstance(error, ClientAuthenticationError) or (
        isinstance(error, HttpResponseError) and error.status_code in (401, 403)
    ):
        code = _code(error) if isinstance(error, HttpResponseError) else ""
        return f"access denied{f' ({code})' if code else ''}; check {CONNECTION_STRING_VARIABLE}"
    if isinstance(error, HttpResponseError):
        code = _code(error)
        first = (error.message or "").strip().splitlines()
        text = code or (first[0] if first else type(error).__name__)
        return f"HTTP {error.status_code}: {text}"
    return f"{type(error).__name__} (is the storage endpoint reachable?)"


class _TranslateErrors:
    """Turn SDK errors into one-line :class:`ClaimError` messages naming the container."""

    def __init__(self, container: str, action: str) -> None:
        self.container, self.action = container, action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if error is None or not isinstance(error, AzureError):
            return False
        raise ClaimError(
            f"cannot {self.action} claims container {self.container!r}: {_describe(error)}"
        ) from None
