"""Per-location claims on this machine, so two masters never train one location at once.

A claim is a file ``<root>/<slug>.claim`` created with ``O_CREAT | O_EXCL``: the kernel
lets exactly one process create it. It holds JSON naming its holder (pid, host, owner
token). A claim whose holder died, or which is older than ``stale_after`` without a
heartbeat, is broken and re-taken. Every removal of a claim file (breaking a stale claim,
releasing our own) happens under a short per-location OS lock and re-reads the file first,
so nobody ever removes a claim that a live holder has just taken. Creating never needs the
lock: ``O_EXCL`` already makes it atomic.

Keep-alive: :meth:`LocalClaims.try_claim` starts a daemon thread on the returned
:class:`Claim` that calls :meth:`Claim.heartbeat` every ``stale_after / 10`` seconds (at most
60 s), so a long training is never judged stale; :meth:`Claim.release` (or leaving the
``with`` block) stops it. If the claim is taken over meanwhile the thread logs an error and
sets :attr:`Claim.lost`; it never raises into the process. A :class:`Claim` built by hand
has no thread until :meth:`Claim.start_keepalive` is called.

:func:`open_claims` picks the kind of claims a datastore needs: these files for a local
datastore, blob leases (:mod:`ml_service.master.blob_claims`) for ``azureblob://``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoanom.names import normalise_location, validate_location

if TYPE_CHECKING:
    from ml_service.master.blob_claims import BlobLeaseClaims
    from ml_service.util.env_variables import Settings

logger = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"
# A claim file with no readable JSON is normally one being written right now; only a
# writer that crashed between create and write leaves one behind for longer than this.
UNREADABLE_GRACE_SECONDS = 60.0
_MAX_ATTEMPTS = 5
DEFAULT_CLAIMS_CONTAINER = "videoanom-claims"
# A heartbeat thread beats at stale_after / 10, but at least this often.
MAX_HEARTBEAT_INTERVAL = 60.0


class ClaimError(RuntimeError):
    """A claim that cannot be taken or kept for a reason other than another live holder."""


class _KeepAlive:
    """A daemon thread that calls ``beat`` every ``interval`` seconds until stopped.

    ``beat`` raising :class:`ClaimError` means the claim is definitively gone (taken over,
    released elsewhere): ``on_lost`` is called and the thread ends. Any other exception is
    taken as transient (storage briefly unreachable) and retried at the next interval,
    unless no beat has succeeded for ``expires_after`` seconds: then the claim may have
    expired and been taken, so it is reported lost too. Nothing is ever raised into the
    process.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        beat: Callable[[], None],
        on_lost: Callable[[str], None],
        expires_after: float | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"keep-alive interval must be positive, not {interval!r}")
        self.interval = float(interval)
        self.expires_after = expires_after
        self._beat = beat
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop beating; waits for a beat in progress unless called from the thread."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.interval):
            started = time.monotonic()
            try:
                self._beat()
            except ClaimError as error:
                if not self._stop.is_set():
                    self._on_lost(str(error))
                return
            except Exception as error:  # a keep-alive must never crash the process
                if self._stop.is_set():
                    return
                silent = time.monotonic() - last_ok
                if self.expires_after is not None and silent >= self.expires_after:
                    self._on_lost(
                        f"no successful heartbeat for {silent:.0f} s "
                        f"(last error: {type(error).__name__}: {error})"
                    )
                    return
                logger.warning(
                    "%s: heartbeat failed (%s: %s); retrying in %.0f s",
                    self._thread.name,
                    type(error).__name__,
                    error,
                    self.interval,
                )
            else:
                # The holder refreshed the claim no earlier than this beat was sent.
                last_ok = started


class _KeptAlive:
    """Keep-alive state shared by :class:`Claim` and the blob lease claim.

    Subclasses provide ``location``, ``heartbeat()``, ``release()`` and may override
    ``_beat()`` (what the thread calls; ``heartbeat()`` by default).
    """

    location: str
    _keepalive: _KeepAlive | None = None
    _lost_reason: str | None = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()  # type: ignore[attr-defined]

    @property
    def lost(self) -> bool:
        """True once the keep-alive found the claim taken over or expired.

        A lost claim no longer protects the location: another master may be training it.
        """
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    @property
    def keepalive_running(self) -> bool:
        return self._keepalive is not None and self._keepalive.alive

    def start_keepalive(self, interval: float, expires_after: float | None = None) -> None:
        """Start the background heartbeat thread (no-op if one was already started)."""
        if self._keepalive is not None:
            return
        slug = normalise_location(self.location)
        self._keepalive = _KeepAlive(
            f"claim-keepalive-{slug}", interval, self._beat, self._mark_lost, expires_after
        )
        self._keepalive.start()

    def _stop_keepalive(self) -> None:
        """Stop the heartbeat thread without releasing (tests use it to play a dead holder)."""
        if self._keepalive is not None:
            self._keepalive.stop()

    def _beat(self) -> None:
        self.heartbeat()  # type: ignore[attr-defined]

    def _mark_lost(self, reason: str) -> None:
        self._lost_reason = reason
        logger.error(
            "claim on %s lost: %s; another master may train this location now",
            self.location,
            reason,
        )


@dataclass
class Claim(_KeptAlive):
    """A held claim on one location; release it (or leave the ``with`` block) when done.

    Claims returned by :meth:`LocalClaims.try_claim` keep themselves fresh with a
    background heartbeat thread until released (see the module docstring).
    """

    location: str
    path: Path
    owner: str
    _released: bool = field(default=False, init=False, repr=False)

    def __enter__(self) -> Claim:
        return self

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Stop the heartbeat thread, then remove the claim file if it still carries our
        owner token."""
        if self._released:
            return
        self._stop_keepalive()  # first, so a beat in flight never sees "released"
        self._released = True
        with _break_lock(self.path):
            record = _read_record(self.path)
            if record is None or record.get("owner") != self.owner:
                logger.warning(
                    "claim on %s is no longer ours (taken over?); leaving it", self.location
                )
                return
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        logger.info("released claim on %s", self.location)

    def heartbeat(self) -> None:
        """Refresh the claim's age so a long, live training is not judged stale."""
        if self._released:
            raise ClaimError(f"claim on {self.location} was released")
        with _break_lock(self.path):
            record = _read_record(self.path)
            if record is None or record.get("owner") != self.owner:
                raise ClaimError(f"claim on {self.location} was taken over by another holder")
            record["heartbeat"] = time.time()
            tmp = self.path.with_name(f".{self.path.name}.{self.owner}.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)


class LocalClaims:
    """Claims kept as files under ``root`` (e.g. ``<VIDEOANOM_HOME>/claims``)."""

    def __init__(
        self,
        root: Path,
        stale_after: float = 6 * 3600,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.stale_after = float(stale_after)
        if heartbeat_interval is None:
            heartbeat_interval = min(self.stale_after / 10, MAX_HEARTBEAT_INTERVAL)
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be positive, not {heartbeat_interval!r}")
        self.heartbeat_interval = float(heartbeat_interval)
        self.host = socket.gethostname()

    def claim_path(self, location: str) -> Path:
        """The claim file of a location; names are validated before they touch a path.

        The slug is used because two names with one slug share a model name and state folder.
        """
        validate_location(location)
        return self.root / f"{normalise_location(location)}{CLAIM_SUFFIX}"

    def holder(self, location: str) -> dict[str, Any] | None:
        """The record of the live claim on ``location``; None if unclaimed or its holder died.

        A claim left by a dead or silent holder counts as no claim, as an expired lease does.
        """
        path = self.claim_path(location)
        record = _read_record(path)
        if record is None or self._broken_reason(path) is not None:
            return None
        return record

    def try_claim(self, location: str) -> Claim | None:
        """Take the claim on ``location``; None if another live holder has it.

        The returned claim's heartbeat thread is already running; release the claim (or
        use it as a context manager) to stop it.
        """
        path = self.claim_path(location)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClaimError(f"cannot create claims folder {self.root}: {exc}") from exc
        owner = uuid.uuid4().hex
        for _ in range(_MAX_ATTEMPTS):
            if self._create(path, owner):
                logger.info("claimed %s (%s)", location, path)
                return self._kept_alive(Claim(location, path, owner))
            with _break_lock(path):
                state = self._broken_reason(path)
                if state is None:
                    return None
                if state == "gone":
                    continue
                self._break(path, location, state)
                if self._create(path, owner):
                    logger.info("claimed %s after breaking a claim (%s)", location, state)
                    return self._kept_alive(Claim(location, path, owner))
        # Only reachable if claims keep vanishing and reappearing under us.
        return None

    def _kept_alive(self, claim: Claim) -> Claim:
        claim.start_keepalive(self.heartbeat_interval, expires_after=self.stale_after)
        return claim

    def _create(self, path: Path, owner: str) -> bool:
        """Create the claim file exclusively; False if it already exists."""
        now = time.time()
        record = {
            "pid": os.getpid(),
            "host": self.host,
            "created": now,
            "heartbeat": now,
            "owner": owner,
        }
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise ClaimError(f"cannot create claim file {path}: {exc}") from exc
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return True

    def _broken_reason(self, path: Path) -> str | None:
        """Why the existing claim may be broken, "gone" if it vanished, None if it is live."""
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        record = _read_record(path)
        now = time.time()
        if record is None:
            if not path.exists():
                return "gone"
            if now - mtime > UNREADABLE_GRACE_SECONDS:
                return "unreadable claim file"
            return None
        last = record.get("heartbeat", record.get("created"))
        if not isinstance(last, int | float):
            return "claim without a timestamp"
        if now - last > self.stale_after:
            return f"stale: no heartbeat for {now - last:.0f} s"
        pid = record.get("pid")
        if record.get("host") == self.host and not pid_alive(pid):
            return f"holder pid {pid} is dead"
        return None

    def _break(self, path: Path, location: str, reason: str) -> None:
        """Move a broken claim aside (atomic rename), then delete it. Caller holds the lock."""
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.broken")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        logger.warning(
            "broke claim on %s (%s): %s", location, reason, _read_record(aside) or "unreadable"
        )
        with contextlib.suppress(OSError):
            aside.unlink()


def claims_for(settings: Settings) -> LocalClaims | BlobLeaseClaims:
    """:func:`open_claims` for the datastore, home and claim settings of a command."""
    return open_claims(
        settings.datastore,
        settings.home,
        settings.claims_container,
        lease_duration=settings.claim_lease_seconds,
    )


def open_claims(
    datastore_uri: str,
    home: Path,
    container: str = DEFAULT_CLAIMS_CONTAINER,
    lease_duration: int = 60,
) -> LocalClaims | BlobLeaseClaims:
    """The claims that fit a datastore.

    ``azureblob://<container>[/<prefix>]``: blob leases in the claims ``container`` of the
    same storage account (same ``AZURE_STORAGE_CONNECTION_STRING``), one blob per location
    under ``<datastore container>[/<prefix>]/``, so masters of different datastores never
    block each other. Anything else: claim files under ``home / "claims"`` (good for
    masters on one machine). Azure is imported only for a blob datastore.
    """
    uri = str(datastore_uri)
    if uri.startswith("azureblob://"):
        from ml_service.master.blob_claims import BlobLeaseClaims
        from videoanom.data.blob import parse_blob_uri
        from videoanom.data.datastore import DatastoreError

        try:
            store_container, store_prefix = parse_blob_uri(uri)
        except DatastoreError as error:
            raise ClaimError(str(error)) from None
        prefix = f"{store_container}/{store_prefix}" if store_prefix else store_container
        return BlobLeaseClaims(container=container, prefix=prefix, lease_duration=lease_duration)
    return LocalClaims(Path(home) / "claims")


def _read_record(path: Path) -> dict[str, Any] | None:
    """The claim's JSON, or None if there is none or it is not (yet) valid JSON."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def pid_alive(pid: object) -> bool:
    """Whether a local process exists; signal 0 only checks, it delivers nothing."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True


@contextlib.contextmanager
def _break_lock(path: Path) -> Iterator[None]:
    """A short per-location OS lock around removals; the OS drops it if the process dies."""
    lock_path = path.with_name(f".{path.stem}.lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _lock_fd(fd)
        try:
            yield
        finally:
            _unlock_fd(fd)
    finally:
        os.close(fd)


if os.name == "nt":  # pragma: no cover - exercised only on Windows
    import msvcrt

    def _lock_fd(fd: int) -> None:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                time.sleep(0.05)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
