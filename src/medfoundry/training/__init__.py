"""Multi-task pretraining: the memory-decoupled trainer, checkpoints, DDP, configs."""

from .checkpoint import latest_checkpoint as latest_checkpoint
from .checkpoint import load_checkpoint as load_checkpoint
from .config import PretrainConfig as PretrainConfig
from .distributed import DistContext as DistContext
from .distributed import init_distributed as init_distributed
from .logging import read_metrics as read_metrics
from .multitask import MultiTaskTrainer as MultiTaskTrainer
from .multitask import WarmupCosine as WarmupCosine
from .multitask import evaluate as evaluate
from .naive import NaiveJointTrainer as NaiveJointTrainer
from .pretrain import build_model as build_model
from .pretrain import pretrain as pretrain
from .pretrain import pretrain_demo as pretrain_demo
from .sampling import TaskSampler as TaskSampler

__all__ = [
    "PretrainConfig",
    "MultiTaskTrainer",
    "NaiveJointTrainer",
    "WarmupCosine",
    "TaskSampler",
    "DistContext",
    "init_distributed",
    "evaluate",
    "pretrain",
    "pretrain_demo",
    "build_model",
    "latest_checkpoint",
    "load_checkpoint",
    "read_metrics",
]
