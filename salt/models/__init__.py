"""Model building blocks; configs name them by class path, e.g. ``salt.models.Transformer``."""

from salt.models.attention import MultiheadAttention
from salt.models.deepsets import DeepSets
from salt.models.dense import Dense
from salt.models.gnn import GATv2
from salt.models.initnet import InitNet
from salt.models.inputnorm import InputNorm
from salt.models.maskformer import MaskDecoder
from salt.models.pooling import GlobalAttentionPooling, MeanPooling, SumPooling
from salt.models.saltmodel import SaltModel
from salt.models.tasks import (
    ClassificationTask,
    GaussianRegressionTask,
    RegressionTask,
    TaskBase,
    VertexingTask,
)
from salt.models.transformer import Transformer

__all__ = [
    "ClassificationTask",
    "DeepSets",
    "Dense",
    "GATv2",
    "GaussianRegressionTask",
    "GlobalAttentionPooling",
    "InitNet",
    "InputNorm",
    "MaskDecoder",
    "MeanPooling",
    "MultiheadAttention",
    "RegressionTask",
    "SaltModel",
    "SumPooling",
    "TaskBase",
    "Transformer",
    "VertexingTask",
]
