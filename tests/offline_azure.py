"""An MLClient that can never reach Azure, for the v2 tests (imported by test modules)."""

from __future__ import annotations

from azure.identity import CredentialUnavailableError

from ml_service.azure.v2.backend import MLClient


class NoCredential:
    """A credential that never has a token: any real request fails before leaving."""

    def get_token(self, *args, **kwargs):
        raise CredentialUnavailableError("no credential in this test")

    get_token_info = get_token


def offline_client(workspace: dict[str, str]) -> MLClient:
    """An MLClient for ``workspace`` (the AZURE_/AML_ settings) with :class:`NoCredential`."""
    return MLClient(
        NoCredential(),
        subscription_id=workspace["AZURE_SUBSCRIPTION_ID"],
        resource_group_name=workspace["AZURE_RESOURCE_GROUP"],
        workspace_name=workspace["AML_WORKSPACE_NAME"],
    )
