"""Lightning callbacks, one per file; configs name them as ``salt.callbacks.<Name>``."""

from salt.callbacks.checkpoint import Checkpoint
from salt.callbacks.interrupt import Interruption
from salt.callbacks.predictionwriter import PredictionWriter
from salt.callbacks.progress import ProgressBar

__all__ = ["Checkpoint", "Interruption", "PredictionWriter", "ProgressBar"]
