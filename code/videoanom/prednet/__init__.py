"""PredNet video prediction model (Lotter, Kreiman & Cox 2016) in Keras 3."""

from videoanom.prednet.model import (
    OUTPUT_MODES,
    PredNet,
    flops_per_frame,
    prednet_loss,
    with_output_mode,
)

__all__ = ["OUTPUT_MODES", "PredNet", "flops_per_frame", "prednet_loss", "with_output_mode"]
