"""nnU-Net v2 against medfoundry on the same phantom split and the same wall-clock budget.

Run with the peer environment's Python (nnU-Net lives in its own virtual environment, never in
the project's)::

    python3.11 -m venv .venv-nnunet
    .venv-nnunet/bin/pip install -c constraints.txt nnunetv2 -e .
    .venv-nnunet/bin/python benchmarks/segmentation_peers.py --raw raw --work nnunet_work --minutes 4 \
        --compare preds

``raw`` is a ``medfoundry segment make-phantoms`` folder (imagesTr/labelsTr for training,
imagesTs/labelsTs held out); ``preds`` a ``segment predict --labels`` output of a medfoundry run
trained for the same budget. The script converts ``raw`` into an nnU-Net raw dataset with
region-based labels (WT, TC, ET, nnU-Net's BraTS setting), plans and preprocesses the
``3d_fullres`` configuration, trains fold 0 (nnU-Net's own 80/20 split) with the stock
``nnUNetTrainer`` stopped by the wall clock (checked after every epoch of 10 iterations), predicts
the held-out cases with nnU-Net's predictor and scores them with the same Dice code as
medfoundry. Times and peak memory go into one JSON line.

nnU-Net finds trainer classes by importing every module of its trainer folder, which imports
the Primus trainers, then timm, then torchvision, which fails on a CPU-only torch. This script
never asks nnU-Net to look a class up: it imports ``nnUNetTrainer`` and builds the predictor
from the trained network in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

DATASET_ID = 501
DATASET = f"Dataset{DATASET_ID}_MedfoundryPhantoms"


def _prepare_raw(raw: Path, work: Path) -> Path:
    target = work / "raw" / DATASET
    if target.exists():
        shutil.rmtree(target)
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    for p in sorted((raw / "imagesTr").iterdir()):
        os.symlink(p.resolve(), target / "imagesTr" / p.name)
    for p in sorted((raw / "labelsTr").iterdir()):
        os.symlink(p.resolve(), target / "labelsTr" / p.name)
    meta = json.loads((raw / "dataset.json").read_text())
    (target / "dataset.json").write_text(json.dumps({
        "channel_names": meta["channel_names"],
        # nnU-Net's region-based BraTS labels; regions_class_order paints WT, TC, ET in turn
        "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [1, 3], "enhancing_tumor": [3]},
        "regions_class_order": [2, 1, 3],
        "numTraining": meta["numTraining"],
        "file_ending": ".nii.gz",
    }, indent=1))
    return target


class _Clock:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget (wall clock)")
    ap.add_argument("--compare", type=Path, help="medfoundry prediction folder holding summary.json")
    args = ap.parse_args()
    work = args.work.resolve()
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[name] = str(work / sub)
        (work / sub).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("nnUNet_compile", "f")
    os.environ["nnUNet_n_proc_DA"] = "2"  # the planner sets torch's threads to it; 0 is refused there

    import torch

    from medfoundry.data.adapters.nnunet_folder import find_nnunet_cases, read_case_label
    from medfoundry.segmentation.regions import parse_regions
    from medfoundry.segmentation.scores import dice_scores, mean_scores

    clock = _Clock()
    prep = work / "preprocessed" / DATASET
    if not (prep / "nnUNetPlans_3d_fullres").is_dir():  # planning is not part of the training budget
        _prepare_raw(args.raw, work)
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                          preprocess)

        extract_fingerprints([DATASET_ID], num_processes=2, check_dataset_integrity=True)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(2,))
    prep_s = clock()

    # augmentation in the training process itself: on 2 cores, worker processes only compete
    os.environ["nnUNet_n_proc_DA"] = "0"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class BudgetTrainer(nnUNetTrainer):
        """The stock trainer, short epochs, stopped by the wall clock."""

        budget_s = args.minutes * 60.0

        # nnUNetTrainer records its own constructor's arguments by name: keep the signature
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = 10
            self.num_val_iterations_per_epoch = 2
            self.num_epochs = 10**6

        def run_training(self):
            started = time.perf_counter()
            self.on_train_start()
            epoch_s = 0.0
            for _ in range(self.current_epoch, self.num_epochs):
                t0 = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val)
                self.on_epoch_end()
                epoch_s = time.perf_counter() - t0
                if time.perf_counter() - started + epoch_s > self.budget_s:
                    break
            self.on_train_end()

    plans = load_json(prep / "nnUNetPlans.json")
    plans["continue_training"] = False  # what nnU-Net's own entry point adds
    trainer = BudgetTrainer(plans=plans, configuration="3d_fullres", fold=0,
                            dataset_json=load_json(prep / "dataset.json"), device=torch.device("cpu"))
    t_train = time.perf_counter()
    trainer.run_training()
    train_s = time.perf_counter() - t_train

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's own predictor builds the network
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()], trainer.dataset_json, type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    out = work / "predictions"
    shutil.rmtree(out, ignore_errors=True)
    cases = find_nnunet_cases(args.raw / "imagesTs", args.raw / "labelsTs")
    t_pred = time.perf_counter()
    predictor.predict_from_files([[str(p) for p in c.images] for c in cases],
                                 [str(out / c.name) for c in cases], save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    pred_s = time.perf_counter() - t_pred
    regions = parse_regions("WT=1,2,3;TC=1,3;ET=3", 4)
    classes = ["background", "NCR", "ED", "ET"]
    per_case = [dice_scores(read_case_label(out / f"{c.name}.nii.gz", 4), read_case_label(c.label, 4), classes,
                            regions) for c in cases]
    result = {"method": "nnunetv2_3d_fullres_fold0", "budget_s": args.minutes * 60,
              "plan_preprocess_s": round(prep_s, 1), "train_s": round(train_s, 1),
              "epochs": trainer.current_epoch, "iterations": trainer.current_epoch * trainer.num_iterations_per_epoch,
              "predict_s": round(pred_s, 1), "test_cases": len(per_case), "dice": mean_scores(per_case),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "load_average": os.getloadavg(), "threads": torch.get_num_threads(),
              "patch_size": list(trainer.configuration_manager.patch_size)}
    if args.compare:
        ours = json.loads((args.compare / "summary.json").read_text())["mean"]
        result["medfoundry_dice"] = ours
        result["ratio_medfoundry_over_nnunet"] = {k: ours[k] / v if v else None for k, v in result["dice"].items()}
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
