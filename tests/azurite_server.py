"""Start and stop a private, in-memory Azurite blob service (the Azure Storage emulator).

Used by the ``azurite`` test fixture (tests/conftest.py) and by bench/bench_master.py::

    with azurite_server(folder) as server:
        BlobServiceClient.from_connection_string(server.connection_string)

Azurite comes from ``node_modules`` (``make setup-test`` runs ``npm ci``). It listens on a
free port on 127.0.0.1 and keeps its data in memory, so nothing outlives the block.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

AZURITE_BIN = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "azurite-blob"
# Azurite's published development key for devstoreaccount1 (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteError(RuntimeError):
    """Azurite is not installed, or did not start."""


@dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite: its connection string, port, log file and process."""

    connection_string: str
    port: int
    log_path: Path
    process: subprocess.Popen


def connection_string(port: int) -> str:
    """The development connection string of an Azurite blob service on ``port``."""
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: Path, timeout: float = 30.0, extra_args: tuple[str, ...] = ()) -> AzuriteServer:
    """Start Azurite (cwd and log in ``folder``); return once it accepts connections.

    Raises :class:`AzuriteError` (with the tail of Azurite's output) if it is missing,
    exits or does not answer within ``timeout`` seconds.
    """
    if not AZURITE_BIN.exists():
        raise AzuriteError(
            f"Azurite is not installed ({AZURITE_BIN} is missing): run `make setup` "
            "(it runs `npm ci`; needs Node.js 20+ and npm)"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = folder / "azurite.log"
    command = [
        str(AZURITE_BIN),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--loose",
        "--silent",
        *extra_args,
    ]  # fmt: skip
    # No --location: Azurite 3.35 refuses it with --inMemoryPersistence; cwd keeps any
    # stray file it might write inside the given folder.
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = AzuriteServer(connection_string(port), port, log_path, process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            state = (
                f"exited with status {process.returncode}"
                if process.poll() is not None
                else f"did not answer within {timeout:.0f} s"
            )
            stop(server)
            output = log_path.read_text(errors="replace")[-3000:]
            raise AzuriteError(f"Azurite ({' '.join(command)}) {state}; its output:\n{output}")
        time.sleep(0.1)


def stop(server: AzuriteServer) -> None:
    """Terminate Azurite (kill it if it has not exited after 10 s)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def azurite_server(folder: Path | None = None, timeout: float = 30.0) -> Iterator[AzuriteServer]:
    """A running Azurite for the duration of the block (in a temporary folder if none given)."""
    with ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="azurite-"))
        server = start(Path(folder), timeout)
        try:
            yield server
        finally:
            stop(server)
