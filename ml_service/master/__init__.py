"""``videoanom master`` and its building blocks: per-location claims and upload readiness."""

from ml_service.master.claims import Claim, ClaimError, LocalClaims
from ml_service.master.readiness import Readiness, check_ready, listing_signature

__all__ = ["Claim", "ClaimError", "LocalClaims", "Readiness", "check_ready", "listing_signature"]
