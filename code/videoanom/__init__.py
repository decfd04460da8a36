"""videoanom: a PredNet video anomaly detector trained for every camera location."""

__version__ = "0.1.0"
