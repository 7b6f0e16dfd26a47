"""Learn2Reg: files and configurations, metrics, evaluation, ranking, dataset maker, split runner.

numpy/scipy only, as the challenge's own evaluation: ``import medfoundry.learn2reg`` does not
import torch (tested). The split runner imports the registration method when it is called.

Modules:
    files      dataset JSON, case and field naming, point CSVs, displacement-field I/O
    config     official evaluation configurations (``TASK_VAL_evaluation_config.json``)
    metrics    Dice/DSC30, HD95, TRE/TRE30, Jacobian figures (SDlogJ, folding, NDV)
    evaluate   evaluate a folder of fields (``medfoundry l2r evaluate``)
    ranking    the challenge's ranking (``medfoundry l2r rank``)
    dataset    synthetic MNI152 datasets with ground-truth fields (``medfoundry l2r make-dataset``)
    runner     register every pair of a split and write the fields (``medfoundry l2r run``)

Example:
    >>> from medfoundry.learn2reg import evaluate_fields, make_dataset
    >>> make_dataset("synth", resolution=2, pairs=3)  # doctest: +SKIP
    >>> results = evaluate_fields("synth", "fields", split="val")  # doctest: +SKIP
"""

from .config import EvaluationConfig as EvaluationConfig
from .config import EvaluationMethod as EvaluationMethod
from .config import evaluation_config_from_dict as evaluation_config_from_dict
from .config import load_evaluation_config as load_evaluation_config
from .dataset import make_dataset as make_dataset
from .dataset import make_pair as make_pair
from .evaluate import config_from_dataset as config_from_dataset
from .evaluate import evaluate_fields as evaluate_fields
from .evaluate import evaluate_pair_arrays as evaluate_pair_arrays
from .evaluate import load_runtimes as load_runtimes
from .files import OFFICIAL_METRICS as OFFICIAL_METRICS
from .files import CaseName as CaseName
from .files import Learn2RegDataset as Learn2RegDataset
from .files import Pair as Pair
from .files import field_stem as field_stem
from .files import find_field as find_field
from .files import load_displacement as load_displacement
from .files import load_spacing as load_spacing
from .files import load_volume as load_volume
from .files import parse_case_name as parse_case_name
from .files import read_json as read_json
from .files import read_nifti as read_nifti
from .files import read_points_csv as read_points_csv
from .files import related_path as related_path
from .files import save_displacement as save_displacement
from .files import write_points_csv as write_points_csv
from .metrics import HARD_FRACTION as HARD_FRACTION
from .metrics import RESULTS_FORMAT as RESULTS_FORMAT
from .metrics import dice_per_label as dice_per_label
from .metrics import displacement_at as displacement_at
from .metrics import hardest_fraction_mean as hardest_fraction_mean
from .metrics import hd95_per_label as hd95_per_label
from .metrics import jacobian_determinant as jacobian_determinant
from .metrics import jacobian_statistics as jacobian_statistics
from .metrics import non_diffeomorphic_volume as non_diffeomorphic_volume
from .metrics import sdlogj_official as sdlogj_official
from .metrics import target_registration_error as target_registration_error
from .metrics import warp_labels as warp_labels
from .ranking import rank_results as rank_results
from .ranking import rank_task as rank_task
from .runner import SplitRun as SplitRun
from .runner import run_split as run_split

__all__ = [
    "EvaluationConfig", "EvaluationMethod", "evaluation_config_from_dict", "load_evaluation_config",
    "make_dataset", "make_pair",
    "config_from_dataset", "evaluate_fields", "evaluate_pair_arrays", "load_runtimes",
    "OFFICIAL_METRICS", "CaseName", "Learn2RegDataset", "Pair", "field_stem", "find_field", "load_displacement",
    "load_spacing", "load_volume", "parse_case_name", "read_json", "read_nifti", "read_points_csv", "related_path",
    "save_displacement", "write_points_csv",
    "HARD_FRACTION", "RESULTS_FORMAT", "dice_per_label", "displacement_at", "hardest_fraction_mean",
    "hd95_per_label", "jacobian_determinant", "jacobian_statistics", "non_diffeomorphic_volume", "sdlogj_official",
    "target_registration_error", "warp_labels",
    "rank_results", "rank_task",
    "SplitRun", "run_split",
]
