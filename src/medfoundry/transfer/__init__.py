"""Transfer benchmarks: frozen probes, fine-tuning and data-efficiency sweeps.

Example:
    >>> from medfoundry.transfer import run_sweep
    >>> from medfoundry.reports import build_report
    >>> run_sweep("db", encoders=["random", "mt=runs/pretrain"], out="sweep", fractions=(0.01, 0.1, 1.0), seeds=2)
    >>> build_report("sweep")
"""

from .config import DEFAULT_FRACTIONS as DEFAULT_FRACTIONS
from .config import MODES as MODES
from .config import TransferConfig as TransferConfig
from .efficiency import plan_runs as plan_runs
from .efficiency import run_sweep as run_sweep
from .efficiency import run_transfer as run_transfer
from .efficiency import software_versions as software_versions
from .sources import EncoderSource as EncoderSource
from .sources import build_model as build_model
from .sources import parse_encoder as parse_encoder
from .sources import prepare_encoder as prepare_encoder
from .finetune import run_finetune as run_finetune
from .loop import TaskData as TaskData
from .probe import FeatureCache as FeatureCache
from .probe import extract_features as extract_features
from .probe import run_frozen as run_frozen
from .results import ResultStore as ResultStore

__all__ = [
    "DEFAULT_FRACTIONS",
    "MODES",
    "TransferConfig",
    "plan_runs",
    "run_sweep",
    "run_transfer",
    "software_versions",
    "EncoderSource",
    "build_model",
    "parse_encoder",
    "prepare_encoder",
    "run_finetune",
    "TaskData",
    "FeatureCache",
    "extract_features",
    "run_frozen",
    "ResultStore",
]
