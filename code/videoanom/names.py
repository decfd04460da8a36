"""Location names and the registry model names derived from them.

A location name comes from a folder (or blob prefix) that anybody with write access to the
datastore can create, so it is validated before it is ever used in a path or a model name.
"""

from __future__ import annotations

import re

_SAFE_CHARS = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 100


class InvalidLocationName(ValueError):
    """A location name that cannot be used safely as a folder or model name."""


def validate_location(name: str) -> str:
    """Return ``name`` unchanged if it can safely name a folder, else raise.

    Refuses names that could escape a folder (``..``, slashes), control characters,
    leading dots (hidden files) and names that normalise to nothing.
    """
    if not name or not name.strip():
        raise InvalidLocationName("location name is empty")
    if _CONTROL.search(name):
        raise InvalidLocationName(f"location name {name!r} contains control characters")
    if "/" in name or "\\" in name:
        raise InvalidLocationName(f"location name {name!r} contains a path separator")
    if name in (".", "..") or name.startswith("."):
        raise InvalidLocationName(f"location name {name!r} starts with a dot")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidLocationName(
            f"location name {name[:20]!r}... is longer than {MAX_NAME_LENGTH}"
        )
    normalise_location(name)
    return name


def normalise_location(name: str) -> str:
    """Map a location name to ``[a-z0-9-]``, the form used in model and pipeline names."""
    slug = _SAFE_CHARS.sub("-", name.lower()).strip("-")
    if not slug:
        raise InvalidLocationName(
            f"location name {name!r} has no letters or digits to build a model name from"
        )
    return slug


def prednet_model_name(location: str) -> str:
    """Registry name of a location's PredNet (CONTRACT section 4)."""
    return f"prednet-{normalise_location(location)}"


def classifier_model_name(location: str) -> str:
    """Registry name of a location's anomaly classifier (CONTRACT section 4)."""
    return f"anomaly-classifier-{normalise_location(location)}"
