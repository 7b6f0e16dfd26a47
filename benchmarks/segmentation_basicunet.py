"""Plain MONAI baseline for 3D segmentation: BasicUNet + sigmoid region losses, time-budgeted.

The bar `medfoundry segment train` must not lose to: a short script anyone would write with
MONAI. Same data (the training split of a stored 3D task and the held-out nnU-Net test folder),
same wall-clock budget, same regions, evaluated with the same Dice code. It prints one JSON
line per run, and ``--compare RUN`` adds medfoundry's figures (from ``segment predict
--labels``' summary.json) and their ratio.

Usage (phantoms from ``medfoundry segment make-phantoms``)::

    medfoundry segment make-phantoms raw --cases 20 --test-cases 8 --seed 0
    medfoundry data import volumes3d raw/imagesTr raw/labelsTr --db db --task brats --modality tomographic
    medfoundry segment train --database db --task brats --out run --minutes 4 --regions "WT=1,2,3;TC=1,3;ET=3"
    medfoundry segment predict run --images raw/imagesTs --labels raw/labelsTs --out preds
    python benchmarks/segmentation_basicunet.py --db db --task brats --test raw --minutes 4 --compare preds

CPU time is shared on a loaded machine: the script reports the load average next to its times.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.networks.nets import BasicUNet
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

from medfoundry.data.adapters.nnunet_folder import find_nnunet_cases, normalize_case, read_case_image, read_case_label
from medfoundry.data.volumes3d import VolumeTask
from medfoundry.segmentation.regions import decode_regions, parse_regions, regions_to_targets
from medfoundry.segmentation.scores import dice_scores, mean_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--test", required=True, help="nnU-Net folder with imagesTs/ and labelsTs/")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--regions", default="WT=1,2,3;TC=1,3;ET=3")
    ap.add_argument("--patch", type=int, nargs=3, default=(48, 48, 48))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", help="medfoundry prediction folder holding summary.json")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    task = VolumeTask.open(args.db, args.task)
    regions = parse_regions(args.regions, task.num_classes)
    train = [{"image": task.image(i), "label": task.label(i)[None]} for i in task.split("train")]
    augment = Compose([
        RandCropByPosNegLabeld(["image", "label"], "label", args.patch, pos=1, neg=1, num_samples=1),
        RandFlipd(["image", "label"], 0.5, 0), RandFlipd(["image", "label"], 0.5, 1), RandFlipd(["image", "label"], 0.5, 2),
        RandScaleIntensityd("image", 0.1, prob=0.5), RandShiftIntensityd("image", 0.1, prob=0.5),
    ]).set_random_state(args.seed)
    net = BasicUNet(3, task.channels, len(regions))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-5)
    dice, bce = DiceLoss(sigmoid=True, batch=True), torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(args.seed)
    budget, steps, step_s = args.minutes * 60, 0, 0.0
    while time.perf_counter() - started + 2 * step_s + 10 < budget:  # leave time for the test set
        t0 = time.perf_counter()
        batch = [augment(train[int(rng.integers(len(train)))])[0] for _ in range(2)]
        x = torch.stack([torch.as_tensor(b["image"]) for b in batch]).float()
        y = regions_to_targets(torch.stack([torch.as_tensor(b["label"]) for b in batch]).long(), regions)
        logits = net(x)
        loss = dice(logits, y) + bce(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        step_s = time.perf_counter() - t0
    net.eval()
    train_s = time.perf_counter() - started
    per_case = []
    with torch.no_grad():
        for case in find_nnunet_cases(Path(args.test) / "imagesTs", Path(args.test) / "labelsTs"):
            image = torch.as_tensor(normalize_case(read_case_image(case)))[None]
            probs = torch.sigmoid(sliding_window_inference(image, args.patch, 2, net, 0.5, mode="gaussian"))[0]
            pred = decode_regions(probs.numpy(), regions)
            per_case.append(dice_scores(pred, read_case_label(case.label, task.num_classes), task.classes, regions))
    result = {"method": "monai_basicunet", "steps": steps, "train_seconds": round(train_s, 1),
              "total_seconds": round(time.perf_counter() - started, 1), "test_cases": len(per_case),
              "dice": mean_scores(per_case), "load_average": os.getloadavg(), "threads": torch.get_num_threads()}
    if args.compare:
        ours = json.loads((Path(args.compare) / "summary.json").read_text())["mean"]
        result["medfoundry_dice"] = ours
        result["ratio_medfoundry_over_basicunet"] = {k: ours[k] / v for k, v in result["dice"].items() if v}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
