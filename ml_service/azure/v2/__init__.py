"""The azure-ai-ml (v2) backend: ``AML_SDK=v2``.

:mod:`.build` turns the backend-neutral step specs into azure-ai-ml entities offline (a
``@dsl.pipeline`` of ``command()`` components with the train step as a sweep, the master
pipeline job and its recurrence schedule); :mod:`.backend` sends them to the workspace.
Importing this package needs the ``azure-v2`` extra (azure-ai-ml, azure-identity).
"""

import warnings

from marshmallow.warnings import Marshmallow4Warning

with warnings.catch_warnings():
    # azure-ai-ml 1.35 declares its schemas with marshmallow APIs that marshmallow 3.x flags
    # (DeprecationWarning) on import; they are the SDK's, not this project's.
    warnings.simplefilter("ignore", Marshmallow4Warning)
    import azure.ai.ml  # noqa: F401

from ml_service.azure.v2.backend import (
    AuthError,
    V2Backend,
    backend_in_job,
    connect_client,
    make_backend,
)
from ml_service.azure.v2.build import (
    BuildError,
    built_step_arguments,
    master_pipeline_job,
    master_schedule,
    training_pipeline_job,
)

__all__ = [
    "AuthError",
    "BuildError",
    "V2Backend",
    "backend_in_job",
    "built_step_arguments",
    "connect_client",
    "make_backend",
    "master_pipeline_job",
    "master_schedule",
    "training_pipeline_job",
]
