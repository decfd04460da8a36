"""Per-location claims on this machine, so two masters never train one location at once.

A claim is a file ``<root>/<slug>.claim`` created with ``O_CREAT | O_EXCL``: the kernel
lets exactly one process create it. It holds JSON naming its holder (pid, host, owner
token). A claim whose holder died, or which is older than ``stale_after`` without a
heartbeat, is broken and re-taken. Every removal of a claim file (breaking a stale claim,
releasing our own) happens under a short per-location OS lock and re-reads the file first,
so nobody ever removes a claim that a live holder has just taken. Creating never needs the
lock: ``O_EXCL`` already makes it atomic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoanom.names import normalise_location, validate_location

logger = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"
# A claim file with no readable JSON is normally one being written right now; only a
# writer that crashed between create and write leaves one behind for longer than this.
UNREADABLE_GRACE_SECONDS = 60.0
_MAX_ATTEMPTS = 5


class ClaimError(RuntimeError):
    """A claim that cannot be taken or kept for a reason other than another live holder."""


@dataclass
class Claim:
    """A held claim on one location; release it (or leave the ``with`` block) when done."""

    location: str
    path: Path
    owner: str
    _released: bool = field(default=False, init=False, repr=False)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Remove the claim file, but only if it still carries our owner token."""
        if self._released:
            return
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

    def __init__(self, root: Path, stale_after: float = 6 * 3600) -> None:
        self.root = Path(root)
        self.stale_after = float(stale_after)
        self.host = socket.gethostname()

    def claim_path(self, location: str) -> Path:
        """The claim file of a location; names are validated before they touch a path.

        The slug is used because two names with one slug share a model name and state folder.
        """
        validate_location(location)
        return self.root / f"{normalise_location(location)}{CLAIM_SUFFIX}"

    def holder(self, location: str) -> dict[str, Any] | None:
        """The JSON record of the current claim on ``location``, or None if unclaimed."""
        return _read_record(self.claim_path(location))

    def try_claim(self, location: str) -> Claim | None:
        """Take the claim on ``location``; None if another live holder has it."""
        path = self.claim_path(location)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClaimError(f"cannot create claims folder {self.root}: {exc}") from exc
        owner = uuid.uuid4().hex
        for _ in range(_MAX_ATTEMPTS):
            if self._create(path, owner):
                logger.info("claimed %s (%s)", location, path)
                return Claim(location, path, owner)
            with _break_lock(path):
                state = self._broken_reason(path)
                if state is None:
                    return None
                if state == "gone":
                    continue
                self._break(path, location, state)
                if self._create(path, owner):
                    logger.info("claimed %s after breaking a claim (%s)", location, state)
                    return Claim(location, path, owner)
        # Only reachable if claims keep vanishing and reappearing under us.
        return None

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
        if record.get("host") == self.host and not _pid_alive(pid):
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


def _read_record(path: Path) -> dict[str, Any] | None:
    """The claim's JSON, or None if there is none or it is not (yet) valid JSON."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _pid_alive(pid: object) -> bool:
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
