"""Graded, seeded scanner shifts of images and volumes, and shifted copies of nnU-Net-style folders.

Each corruption takes a channel-first image, (C, H, W) or (C, X, Y, Z), in raw intensities
and returns a float32 array of the same shape; labels are never touched. The same functions
serve 3D folders (:func:`make_shift_volumes`) and 2D database tasks
(:mod:`medfoundry.robustness.shifts_db`): k-space edits act on every spatial axis, random
axes and directions are drawn among the image's own. Intensities are measured on the
channel's own robust range ``r = p99.5 - p0.5`` (percentiles of all voxels), so a severity
means the same on MR (arbitrary units) and CT (HU). Severities 1..5 (ImageNet-C's grading):

============  ====================================================  =====  =====  =====  =====  =====
corruption    parameter (per severity 1..5)                          1      2      3      4      5
============  ====================================================  =====  =====  =====  =====  =====
bias          log-amplitude a of the field exp(a * n), n smooth,     0.1    0.2    0.3    0.45   0.6
              max |n| = 1, sigma = a quarter of the largest axis
gamma         |log gamma| on the [p0.5, p99.5]-scaled image           0.1    0.2    0.3    0.45   0.6
              (sign drawn per case: brighter or darker mid-tones)
gaussian      noise sigma as a fraction of r                         0.02   0.04   0.06   0.10   0.15
rician        sigma of both quadrature channels, fraction of r       0.02   0.04   0.06   0.10   0.15
blur          Gaussian sigma, voxels                                 0.5    0.75   1.0    1.5    2.0
lowres        down-sampling factor per axis (linear down, then up)   1.5    2.0    2.5    3.0    4.0
ghosting      k-space line scale on every 4th plane of a random      0.2    0.35   0.5    0.65   0.8
              axis (1 - scale of those lines lost: ghost strength)
motion        translation, voxels, of the k-space planes acquired     1      2      3      4      6
              after a random time in [0.4, 0.6] of the acquisition
ct            intensity offset, fraction of r, and scale 1 + s       0.01   0.02   0.04   0.06   0.10
              (s = 0.02, 0.05, 0.10, 0.15, 0.20)
stain         RGB only: HED optical densities x -> x (1 + a u) +      0.05   0.10   0.20   0.30   0.40
              b v p99.5(x), |u|, |v| in [0.5, 1], signs drawn per     0.02   0.05   0.10   0.15   0.20
              case and stain; a (first row) and b (second row)
============  ====================================================  =====  =====  =====  =====  =====

The random draws of a case depend on ``(seed, corruption, case)`` and not on the severity, so
the five severities of a case are the same field or noise at growing strength.

Note: a run trained with ``intensity: zscore`` normalises each case and channel, which undoes a
global offset and scale (``ct``) exactly; that corruption matters for runs with fixed windows
(``intensity: none``) and is kept to measure exactly that.

Example:
    >>> from medfoundry.robustness.shifts import corrupt, make_shift_volumes
    >>> shifted = corrupt(image, "bias", 3, seed=0, case="case7")
    >>> make_shift_volumes("raw/imagesTs", "shifted", ["bias", "gaussian"], [1, 3, 5], labels="raw/labelsTs")
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from ..randomfields import smooth_noise
from ..utils import atomic_path, atomic_write_json

__all__ = ["CORRUPTIONS", "COLOUR_CORRUPTIONS", "SEVERITIES", "corrupt", "case_rng", "make_shift_volumes",
           "parse_corruptions", "parse_severities"]

SEVERITIES = (1, 2, 3, 4, 5)
_GHOST_EVERY = 4  # k-space planes between scaled planes (4 ghosts across the field of view)


def _robust_range(channel: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(channel, [0.5, 99.5])
    return float(lo), float(max(hi - lo, 1e-6))


def _bias(image, s, rng):
    a = (0.1, 0.2, 0.3, 0.45, 0.6)[s - 1]
    field = np.exp(a * smooth_noise(image.shape[1:], max(image.shape[1:]) / 4, rng))
    # one field for every channel: the receive coil is the same for every sequence of a session
    return image * field[None]


def _gamma(image, s, rng):
    g = float(np.exp(rng.choice([-1.0, 1.0]) * (0.1, 0.2, 0.3, 0.45, 0.6)[s - 1]))
    out = np.empty_like(image)
    for c, ch in enumerate(image):
        lo, r = _robust_range(ch)
        out[c] = lo + r * np.clip((ch - lo) / r, 0.0, None) ** g
    return out


def _gaussian(image, s, rng):
    frac = (0.02, 0.04, 0.06, 0.10, 0.15)[s - 1]
    return np.stack([ch + frac * _robust_range(ch)[1] * rng.standard_normal(ch.shape) for ch in image])


def _rician(image, s, rng):
    frac = (0.02, 0.04, 0.06, 0.10, 0.15)[s - 1]
    out = np.empty_like(image)
    for c, ch in enumerate(image):
        lo, r = _robust_range(ch)
        # magnitude of a complex signal with Gaussian noise on both channels, on a non-negative signal
        mag = np.clip(ch - lo, 0.0, None)
        n1, n2 = (frac * r * rng.standard_normal(ch.shape) for _ in range(2))
        out[c] = lo + np.sqrt((mag + n1) ** 2 + n2 ** 2)
    return out


def _blur(image, s, rng):
    sigma = (0.5, 0.75, 1.0, 1.5, 2.0)[s - 1]
    return np.stack([ndimage.gaussian_filter(ch, sigma, mode="nearest") for ch in image])


def _lowres(image, s, rng):
    factor = (1.5, 2.0, 2.5, 3.0, 4.0)[s - 1]
    out = np.empty_like(image)
    for c, ch in enumerate(image):
        small = ndimage.zoom(ch, 1.0 / factor, order=1, mode="nearest")
        up = ndimage.zoom(small, [a / b for a, b in zip(ch.shape, small.shape)], order=1, mode="nearest")
        out[c] = up[tuple(slice(0, n) for n in ch.shape)]
    return out


def _kspace(image, edit):
    axes = tuple(range(1, image.ndim))
    k = np.fft.fftshift(np.fft.fftn(image, axes=axes), axes=axes)
    k = edit(k)
    back = np.fft.ifftn(np.fft.ifftshift(k, axes=axes), axes=axes)
    # a magnitude image, as the scanner reconstructs it
    return np.abs(back).astype(np.float32)


def _channel_floor(image) -> np.ndarray:
    """Each channel's p0.5, shaped to broadcast over the channel's voxels."""
    lo = [_robust_range(ch)[0] for ch in image]
    return np.asarray(lo, np.float32).reshape(-1, *[1] * (image.ndim - 1))


def _ghosting(image, s, rng):
    scale = 1.0 - (0.2, 0.35, 0.5, 0.65, 0.8)[s - 1]
    axis = int(rng.integers(1, image.ndim))
    lo = _channel_floor(image)

    def edit(k):
        index = [slice(None)] * k.ndim
        index[axis] = slice(0, None, _GHOST_EVERY)
        centre = k.shape[axis] // 2
        keep = k.take([centre], axis=axis).copy()
        k[tuple(index)] *= scale
        # the centre line holds the mean intensity; scaling it would only dim the image
        centre_index = [slice(None)] * k.ndim
        centre_index[axis] = slice(centre, centre + 1)
        k[tuple(centre_index)] = keep
        return k

    return _kspace(image - lo, edit) + lo


def _motion(image, s, rng):
    shift = (1.0, 2.0, 3.0, 4.0, 6.0)[s - 1]
    dims = image.ndim - 1
    axis = int(rng.integers(1, image.ndim))  # phase-encoding axis: planes acquired in order along it
    direction = rng.standard_normal(dims)
    direction /= np.linalg.norm(direction) + 1e-12
    start = rng.uniform(0.4, 0.6)
    lo = _channel_floor(image)

    def edit(k):
        freqs = np.meshgrid(*[np.fft.fftshift(np.fft.fftfreq(n)) for n in k.shape[1:]], indexing="ij")
        phase = np.exp(-2j * np.pi * shift * sum(d * f for d, f in zip(direction, freqs)))
        n = k.shape[axis]
        moved = np.zeros(k.shape[1:], bool)
        index = [slice(None)] * dims
        index[axis - 1] = slice(int(start * n), n)
        moved[tuple(index)] = True
        return np.where(moved[None], k * phase[None], k)

    return _kspace(image - lo, edit) + lo


def _ct(image, s, rng):
    offset = (0.01, 0.02, 0.04, 0.06, 0.10)[s - 1]
    scale = 1.0 + (0.02, 0.05, 0.10, 0.15, 0.20)[s - 1]
    sign = rng.choice([-1.0, 1.0])
    return np.stack([ch * scale + sign * offset * _robust_range(ch)[1] for ch in image])


def _stain(image, s, rng):
    # lazy: skimage.color is only needed by microscopy tasks
    from skimage.color import hed_from_rgb, rgb_from_hed

    if image.shape[0] != 3:
        raise ConfigError(f"corrupt: stain jitter needs an RGB image (3 channels), got {image.shape[0]}")
    a = (0.05, 0.10, 0.20, 0.30, 0.40)[s - 1]
    b = (0.02, 0.05, 0.10, 0.15, 0.20)[s - 1]
    # magnitudes of at least half the severity's amount: every case visibly changes colour
    u, v = (rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3) for _ in range(2))
    # skimage's rgb2hed/hed2rgb with their stain matrices (Ruifrok and Johnston), but without the
    # clipping of negative densities in rgb2hed: colours outside the H-E-DAB cone would change by
    # up to 0.08 on a bare round trip, and severity 0 must be the identity
    pixels = np.clip(image.reshape(3, -1).T, 1e-6, 1.0).astype(np.float64)
    hed = -np.log(pixels) @ hed_from_rgb
    peak = np.percentile(hed, 99.5, axis=0)
    # the offset is relative to each stain's own peak density, so a stain absent from the
    # field (DAB on plain H&E) stays nearly absent instead of tinting the whole image
    hed = hed * (1.0 + a * u) + b * v * peak
    rgb = np.exp(-(hed @ rgb_from_hed))
    return np.clip(rgb, 0.0, 1.0).T.reshape(image.shape)


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "bias": _bias, "gamma": _gamma, "gaussian": _gaussian, "rician": _rician, "blur": _blur, "lowres": _lowres,
    "ghosting": _ghosting, "motion": _motion, "ct": _ct}
#: Corruptions of colour images only (RGB in [0, 1], channel first); not offered for volume folders.
COLOUR_CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {"stain": _stain}
_ALL = {**CORRUPTIONS, **COLOUR_CORRUPTIONS}


def case_rng(seed: int, corruption: str, case: str) -> np.random.Generator:
    """Generator of one case's draws: depends on ``(seed, corruption, case)`` only."""
    return np.random.default_rng([int(seed), zlib.crc32(corruption.encode()), zlib.crc32(case.encode())])


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int = 0, case: str = "") -> np.ndarray:
    """Corrupted copy (float32) of ``image``, (C, H, W) or (C, X, Y, Z), raw intensities.

    Args:
        image: channel-first image or volume; any number of channels (``stain``: 3, RGB in [0, 1]).
        corruption: one of :data:`CORRUPTIONS` or :data:`COLOUR_CORRUPTIONS` (module table).
        severity: 1..5.
        seed, case: the draws depend on both (and not on the severity).

    Raises:
        ConfigError: unknown corruption or severity, or an image that is not (C, H, W) or (C, X, Y, Z).
    """
    if corruption not in _ALL:
        raise ConfigError(f"corrupt: unknown corruption {corruption!r}; expected one of {', '.join(_ALL)}")
    if int(severity) not in SEVERITIES:
        raise ConfigError(f"corrupt: severity must be one of 1..5, got {severity!r}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (3, 4):
        raise ConfigError(f"corrupt: expected an image (C, H, W) or (C, X, Y, Z), got shape {image.shape}")
    out = _ALL[corruption](image, int(severity), case_rng(seed, corruption, case))
    return np.asarray(out, dtype=np.float32)


def parse_corruptions(text: str, where: str = "--corruptions") -> list[str]:
    """``"bias,gamma"`` -> ``["bias", "gamma"]``; ``"all"`` -> every corruption."""
    names = list(CORRUPTIONS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in CORRUPTIONS]
    if bad or not names:
        raise ConfigError(f"{where}: unknown corruption(s) {bad or text!r}; expected 'all' or a comma-separated "
                          f"list of {', '.join(CORRUPTIONS)}")
    return names


def parse_severities(text: str, where: str = "--severities") -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``, each in 1..5."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise ConfigError(f"{where}: expected comma-separated integers 1..5, got {text!r}") from err
    if not values or any(v not in SEVERITIES for v in values):
        raise ConfigError(f"{where}: expected comma-separated integers 1..5, got {text!r}")
    return values


def make_shift_volumes(images: str | Path, out: str | Path, corruptions: Sequence[str],
                       severities: Sequence[int], *, seed: int = 0, labels: str | Path | None = None,
                       progress: Callable[[int, int], Any] | None = None) -> list[Path]:
    """Write ``OUT/<corruption>_s<severity>/`` per pair, each an nnU-Net-style folder:
    ``imagesTs/CASE_000K.nii.gz`` (corrupted, float32, header and affine of the source file),
    ``labelsTs/CASE.nii.gz`` (copied byte for byte when ``labels`` is given) and
    ``provenance/CASE.json`` (source files, corruption, severity, seed).

    Returns:
        The folders written, in corruption-then-severity order.
    """
    import shutil

    import nibabel as nib

    from ..data.adapters.nnunet_folder import check_case_grids, find_nnunet_cases, read_case_image
    from ..io.volumes import write_nifti

    corruptions = [parse_corruptions(c, "corruptions")[0] for c in corruptions]
    severities = [parse_severities(str(s), "severities")[0] for s in severities]
    cases = find_nnunet_cases(images, labels)
    out = Path(out)
    folders = [out / f"{c}_s{s}" for c in corruptions for s in severities]
    total, done = len(cases) * len(folders), 0
    for case in cases:
        check_case_grids(case)
        image = read_case_image(case)
        headers = [nib.load(str(p)) for p in case.images]
        for c in corruptions:
            for s in severities:
                folder = out / f"{c}_s{s}"
                shifted = corrupt(image, c, s, seed=seed, case=case.name)
                start = 0
                for src, img in zip(case.images, headers):
                    n = img.shape[3] if len(img.shape) == 4 else 1
                    part = shifted[start:start + n]
                    start += n
                    data = np.moveaxis(part, 0, 3) if len(img.shape) == 4 else part[0]
                    header = img.header.copy()
                    header.set_data_dtype(np.float32)
                    write_nifti(folder / "imagesTs" / src.name, data, img.affine, header=header)
                if case.label is not None:
                    with atomic_path(folder / "labelsTs" / case.label.name) as tmp:
                        shutil.copyfile(case.label, tmp)
                atomic_write_json(folder / "provenance" / f"{case.name}.json", {
                    "case": case.name, "corruption": c, "severity": s, "seed": int(seed),
                    "sources": [str(p) for p in case.images], "label": None if case.label is None else str(case.label)})
                done += 1
                if progress is not None:
                    progress(done, total)
    return folders
