"""Shared pieces of the synthetic generators: seeded streams, irregular shapes, boxes, splits.

Coordinates: arrays are indexed (row, column) = (y, x); boxes are ``(x0, y0, x1, y1)`` in
pixels with pixel *edges* as bounds, so a one-pixel object at row r, column c has the box
``(c, r, c + 1, r + 1)``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "task_rng",
    "sample_rng",
    "Blob",
    "irregular_blob",
    "paint_instance",
    "boxes_from_instances",
    "stratified_splits",
]


def task_rng(seed: int, task: str, stream: int = 0) -> np.random.Generator:
    """Generator for task-level choices; independent of every other task and of task order."""
    return np.random.default_rng([int(seed), zlib.crc32(task.encode()), 2**31 + int(stream)])


def sample_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """Generator for sample ``index`` of ``task``; sample i is the same whatever the task size."""
    return np.random.default_rng([int(seed), zlib.crc32(task.encode()), int(index)])


@dataclass(frozen=True)
class Blob:
    """A soft object footprint restricted to a window of the image.

    Attributes:
        window: (row slice, column slice) of the image the footprint covers.
        soft: float32 coverage in [0, 1] over the window (anti-aliased edge).
    """

    window: tuple[slice, slice]
    soft: np.ndarray

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, np.float32)
        out[self.window] = self.soft
        return out


def irregular_blob(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float],
                   angle: float, rng: np.random.Generator, irregularity: float = 0.1,
                   harmonics: int = 5, edge: float = 1.0) -> Blob:
    """An ellipse (pixels) whose radius is perturbed by random low-order angular harmonics.

    Args:
        shape: image shape (rows, columns).
        center: (row, column) of the centre, pixels (pixel centres at integer coordinates).
        radii: (along-axis, across-axis) semi-axes in pixels before perturbation.
        angle: orientation of the first semi-axis, radians from the column axis.
        rng: draws the harmonic amplitudes and phases.
        irregularity: standard deviation of the relative radius perturbation of harmonic 2;
            harmonic k gets ``irregularity / (k - 1)``.
        harmonics: highest harmonic used.
        edge: width of the soft edge in pixels.
    """
    ks = np.arange(2, harmonics + 1)
    amps = rng.normal(0.0, 1.0, len(ks)) * irregularity / (ks - 1)
    phases = rng.uniform(0.0, 2 * np.pi, len(ks))
    reach = max(radii) * (1.0 + float(np.abs(amps).sum())) + edge + 1.0
    r0 = max(0, int(np.floor(center[0] - reach)))
    r1 = min(shape[0], int(np.ceil(center[0] + reach)) + 1)
    c0 = max(0, int(np.floor(center[1] - reach)))
    c1 = min(shape[1], int(np.ceil(center[1] + reach)) + 1)
    window = (slice(r0, max(r0, r1)), slice(c0, max(c0, c1)))
    if r1 <= r0 or c1 <= c0:
        return Blob(window, np.zeros((max(0, r1 - r0), max(0, c1 - c0)), np.float32))
    dy = np.arange(r0, r1, dtype=np.float64)[:, None] - center[0]
    dx = np.arange(c0, c1, dtype=np.float64)[None, :] - center[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u = (ca * dx + sa * dy) / radii[0]
    v = (-sa * dx + ca * dy) / radii[1]
    z = u + 1j * v
    rho = np.abs(z)
    # Re(e^{i k phi} e^{i phase_k}) = cos(k phi + phase_k), with e^{i phi} = z / |z|.
    unit = z / np.maximum(rho, 1e-9)
    boundary = 1.0 + np.real(np.polynomial.polynomial.polyval(unit, np.r_[0, 0, amps * np.exp(1j * phases)]))
    # (boundary - rho) is in units of the radius; times the mean radius gives ~pixels.
    scale = 0.5 * (radii[0] + radii[1])
    soft = np.clip((boundary - rho) * scale / edge + 0.5, 0.0, 1.0).astype(np.float32)
    return Blob(window, soft)


def paint_instance(instances: np.ndarray, blob: Blob, label: int, threshold: float = 0.5,
                   overwrite: bool = False) -> int:
    """Write ``label`` where the blob covers >= ``threshold``; returns the number of pixels written.

    Without ``overwrite`` pixels already owned by another instance are kept, so instances never
    overlap and every box derived from the map matches its mask.
    """
    region = instances[blob.window]
    sel = blob.soft >= threshold
    if not overwrite:
        sel &= region == 0
    region[sel] = label
    return int(sel.sum())


def boxes_from_instances(instances: np.ndarray, labels: dict[int, int] | None = None,
                         min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight boxes of every instance id > 0 of an instance map.

    Returns:
        boxes (M, 4) float32 ``(x0, y0, x1, y1)`` pixel edges, labels (M,) int64 (from
        ``labels[id]``, default 0) and ids (M,) int64, sorted by id.
    """
    ids = np.unique(instances)
    ids = ids[ids > 0]
    boxes, out_labels, kept = [], [], []
    for k in ids:
        rows, cols = np.nonzero(instances == k)
        if len(rows) < min_pixels:
            continue
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        out_labels.append(0 if labels is None else labels[int(k)])
        kept.append(int(k))
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(out_labels, np.int64),
            np.asarray(kept, np.int64))


def stratified_splits(strata: np.ndarray, rng: np.random.Generator,
                      fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> dict[str, list[int]]:
    """Split sample indices 60/20/20 (default) within each stratum, so every split keeps the mix."""
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    strata = np.asarray(strata)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        members = members[rng.permutation(len(members))]
        n = len(members)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val, n_test = max(1, n_val), max(1, n_test)
        n_train = n - n_val - n_test
        out["train"] += members[:n_train].tolist()
        out["val"] += members[n_train:n_train + n_val].tolist()
        out["test"] += members[n_train + n_val:].tolist()
    return {k: sorted(v) for k, v in out.items()}


