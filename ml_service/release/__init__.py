"""The release gate (``videoanom release``): see :mod:`ml_service.release.gate`."""

from ml_service.release.gate import ReleaseResult, azure_deployer, release
from ml_service.release.smoke import SmokeRequest, SmokeResult, service_smoke_test

__all__ = [
    "ReleaseResult",
    "SmokeRequest",
    "SmokeResult",
    "azure_deployer",
    "release",
    "service_smoke_test",
]
