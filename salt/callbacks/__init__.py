"""Lightning callbacks, one per file; configs name them as ``salt.callbacks.<Name>``."""

from salt.callbacks.checkpoint import Checkpoint
from salt.callbacks.interrupt import Interruption
from salt.callbacks.maskformer_metrics import MaskformerMetrics
from salt.callbacks.predictionwriter import PredictionWriter
from salt.callbacks.progress import ProgressBar
from salt.callbacks.summary import ModelSummary

__all__ = [
    "Checkpoint",
    "Interruption",
    "MaskformerMetrics",
    "ModelSummary",
    "PredictionWriter",
    "ProgressBar",
]
