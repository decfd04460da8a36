"""Frame-level anomaly scoring: features from a trained PredNet and a per-location detector."""

from videoanom.scoring.detector import Detector
from videoanom.scoring.features import ExtractConfig, FeatureSet, extract_features

__all__ = ["Detector", "ExtractConfig", "FeatureSet", "extract_features"]
