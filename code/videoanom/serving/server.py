"""``videoanom serve``: the scoring service under uvicorn (one worker, one process).

One worker, because every worker would load every location's TensorFlow models again;
scoring already runs in a thread pool. uvicorn stops gracefully on SIGTERM or Ctrl-C: it
stops accepting connections and finishes the requests in flight (up to
``GRACEFUL_SECONDS``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

GRACEFUL_SECONDS = 30


def build_server(settings: Any, host: str, port: int, locations: list[str] | None = None):
    """A ``uvicorn.Server`` for the service (models load when it starts)."""
    import mlflow
    import uvicorn

    from videoanom.serving.app import create_app

    mlflow.set_tracking_uri(settings.tracking_uri)
    app = create_app(settings, locations)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        log_config=None,  # log through the root logger, in the project's format
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    return uvicorn.Server(config)


def run_server(settings: Any, host: str, port: int, locations: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; exits with a one-line error when the service cannot start
    (uvicorn has logged why: the port in use, a failed start-up)."""
    server = build_server(settings, host, port, locations)
    logger.info(
        "videoanom serve: loading the models of %s from %s, then listening on http://%s:%d "
        "(docs at /docs)",
        ", ".join(locations) if locations else "every registered location",
        redact_uri(settings.tracking_uri),
        host,
        port,
    )
    server.run()
    if not server.started:
        raise SystemExit(f"error: the scoring service could not start on {host}:{port}")


def redact_uri(uri: str) -> str:
    """``uri`` without a password (``scheme://user:secret@host`` -> ``scheme://user:***@host``)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)
