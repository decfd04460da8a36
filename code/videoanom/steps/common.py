"""What every step script shares: logging set-up and turning errors into exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("videoanom")

USER_ERROR_EXIT = 2
# Set by the local runner: a step must not outlive the runner that started it, or a killed
# pipeline would leave an orphan step racing the resumed one for the same outputs.
DIE_WITH_PARENT_ENV = "VIDEOANOM_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def configure_logging(verbose: bool = False) -> None:
    """Log to standard error in a compact format (once per process)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_step(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a step's ``main``; a bad-input error becomes one line on stderr and exit code 2.

    Bad input (``ValueError`` and its subclasses: unreadable labels, no usable clip, an
    unsafe location name...) is something the user fixes, so it gets a one-line reason, not
    a traceback. Anything else is a bug and keeps its traceback.
    """
    configure_logging()
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        die_with_parent()
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        logger.debug("prctl is not available; this step may outlive its runner")
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def write_json(path: Path, payload: dict) -> None:
    """Write a step output atomically (temporary file, then rename), so a crash never
    leaves a half-written file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
