"""Overlapping label regions (BraTS WT/TC/ET) as sigmoid targets, and back to label maps.

A region is a named set of label values, e.g. ``"WT=1,2,3;TC=1,3;ET=3"``. Regions must be
nested or disjoint (a tree under set inclusion); then each region *writes* exactly one label
value: its values minus those of the regions inside it (WT writes 2, TC writes 1, ET writes
3). Decoding paints the regions from the largest to the smallest, so a voxel inside ET ends up
3 and the label map's regions satisfy ET ⊆ TC ⊆ WT by construction (nnU-Net's
``regions_class_order`` rule, derived here instead of typed by hand).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["Region", "parse_regions", "format_regions", "regions_to_targets", "decode_regions",
           "labels_to_region_masks"]


@dataclass(frozen=True)
class Region:
    """``name``, the label ``values`` it covers, and the single value it ``writes`` when decoded."""

    name: str
    values: tuple[int, ...]
    writes: int


def parse_regions(text: str, num_classes: int | None = None) -> list[Region]:
    """Parse ``"NAME=v,v;NAME=v"`` into regions ordered for decoding (supersets first).

    Args:
        text: region definitions separated by ``;``.
        num_classes: when given, every value must be in ``1 .. num_classes - 1``.

    Raises:
        ConfigError: bad syntax, duplicate names, values out of range, regions that overlap
            without nesting, or a region that would write several values.
    """
    regions: dict[str, tuple[int, ...]] = {}
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        name, sep, vals = part.partition("=")
        name = name.strip()
        try:
            values = tuple(sorted({int(v) for v in vals.split(",") if v.strip()}))
        except ValueError:
            values = ()
        if not sep or not name or not values:
            raise ConfigError(f"--regions entry {part!r}: expected NAME=v,v,... with integer label values")
        if name in regions:
            raise ConfigError(f"--regions: region {name!r} is defined twice")
        bad = [v for v in values if v < 1 or (num_classes is not None and v >= num_classes)]
        if bad:
            top = f"1..{num_classes - 1}" if num_classes is not None else ">= 1"
            raise ConfigError(f"--regions {name}: label values {bad} outside the foreground labels {top}")
        regions[name] = values
    if not regions:
        raise ConfigError(f"--regions {text!r}: no region defined")
    sets = {n: set(v) for n, v in regions.items()}
    for a in sets:
        for b in sets:
            if a < b and sets[a] & sets[b] and not (sets[a] <= sets[b] or sets[b] <= sets[a]):
                raise ConfigError(f"--regions: {a} and {b} overlap without one containing the other; "
                                  "regions must be nested or disjoint to decode to one label per voxel")
    order = sorted(regions, key=lambda n: (-len(regions[n]), list(regions).index(n)))
    out = []
    for n in order:
        inner = set().union(*(sets[m] for m in sets if m != n and sets[m] < sets[n]))
        own = sets[n] - inner
        if len(own) != 1:
            raise ConfigError(f"--regions: region {n} would write {len(own)} label values {sorted(own)} "
                              "(each region must add exactly one value to the regions inside it)")
        out.append(Region(n, regions[n], own.pop()))
    return out


def format_regions(regions: list[Region]) -> str:
    return ";".join(f"{r.name}={','.join(str(v) for v in r.values)}" for r in regions)


def labels_to_region_masks(label: np.ndarray, regions: list[Region]) -> np.ndarray:
    """Binary masks (R, *spatial) uint8 of each region in a label map."""
    return np.stack([np.isin(label, r.values) for r in regions]).astype(np.uint8)


def regions_to_targets(label, regions: list[Region]):
    """Torch version of :func:`labels_to_region_masks` for training: (B, 1, *S) int labels ->
    (B, R, *S) float targets."""
    import torch

    return torch.cat([torch.isin(label, torch.tensor(r.values, device=label.device)) for r in regions],
                     dim=1).float()


def decode_regions(probabilities: np.ndarray, regions: list[Region], threshold: float = 0.5) -> np.ndarray:
    """Label map (uint8, *spatial) from per-region probabilities (R, *spatial), painting the
    regions in the order of ``regions`` (supersets first, as :func:`parse_regions` returns)."""
    if probabilities.shape[0] != len(regions):
        raise ValueError(f"decode_regions: {probabilities.shape[0]} channels for {len(regions)} regions")
    label = np.zeros(probabilities.shape[1:], np.uint8)
    for p, r in zip(probabilities, regions):
        label[p > threshold] = r.writes
    return label
