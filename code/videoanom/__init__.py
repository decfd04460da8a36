"""videoanom: a PredNet video anomaly detector trained for every camera location."""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lines) hides the
# messages users need; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
