"""The latest registered version of every model, in a few registry calls.

``status`` and the master need this for every location at once; asking per model would
cost one call per location. Kept apart from ``videoanom.registry`` so that callers with no
registry yet never import MLflow.
"""

from __future__ import annotations

from pathlib import Path

PAGE_SIZE = 10_000


def latest_versions(tracking_uri: str) -> dict[str, int]:
    """``{model name: latest version}``; empty when the local SQLite registry does not exist."""
    local_db = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not Path(local_db).is_file():
        return {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    latest: dict[str, int] = {}
    token = None
    while True:
        page = client.search_model_versions(max_results=PAGE_SIZE, page_token=token)
        for version in page:
            latest[version.name] = max(latest.get(version.name, 0), int(version.version))
        token = page.token
        if not token:
            return latest
