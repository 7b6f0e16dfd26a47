"""The fast paths of the hybrid method equal the plain forms they replace."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from medfoundry.registration.configs import HybridConfig
from medfoundry.registration.convex_adam import convex_adam, resample_grid_field
from medfoundry.registration.features import mind_ssc
from medfoundry.registration.fields import _sample, box_smooth, box_sum, identity_grid
from medfoundry.registration.world import save_nifti


def _grid_sample_reference(disp, a, b, out_shape):
    """Point j of the spacing-b grid sits at b*j + (b-1)/2; sample the spacing-a grid there (border)."""
    coords = identity_grid(tuple(out_shape), disp.device, disp.dtype)
    return _sample(disp, (b * coords + (b - 1) / 2 - (a - 1) / 2) / a, "bilinear", "border")


@pytest.mark.parametrize("shape,a,b,out", [((9, 10, 8), 6, 2, (26, 29, 24)), ((12, 14, 11), 2, 1, (23, 27, 21)),
                                          ((7, 6), 4, 1, (27, 23)), ((5, 6, 7), 3, 1, (15, 17, 20)),
                                          ((4, 4, 4), 3, 1, (14, 12, 12))])
def test_resample_grid_field_equals_grid_sample(shape, a, b, out):
    # the last case needs more than floor(4 * 3) = 12 points on one axis: the grid_sample fallback
    disp = torch.randn(1, len(shape), *shape, generator=torch.Generator().manual_seed(0))
    fast = resample_grid_field(disp, a, b, out)
    assert fast.shape == (1, len(shape)) + out
    torch.testing.assert_close(fast, _grid_sample_reference(disp, a, b, out), atol=1e-5, rtol=1e-5)


def test_box_sum_is_the_box_mean_times_the_box_volume():
    x = torch.rand(1, 2, 9, 8, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(box_sum(x, 1), box_smooth(x, 1) * 27, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(box_sum(x[:, :, 0], 2), box_smooth(x[:, :, 0], 2) * 25, atol=1e-5, rtol=1e-5)
    assert box_sum(x, 0) is x


def test_field_gzip_level_zero_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    field = rng.standard_normal((6, 5, 4, 3)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    stored = save_nifti(tmp_path / "disp.nii.gz", field, affine, compresslevel=0)
    packed = save_nifti(tmp_path / "disp1.nii.gz", field, affine)
    for path in (stored, packed):
        image = nib.load(str(path))
        np.testing.assert_array_equal(np.asarray(image.dataobj), field)
        np.testing.assert_allclose(image.affine, affine)
    assert len(gzip.decompress(stored.read_bytes())) == len(gzip.decompress(packed.read_bytes()))
    assert stored.stat().st_size > len(gzip.decompress(stored.read_bytes()))  # stored, not compressed
    zeros = save_nifti(tmp_path / "zeros.nii.gz", np.zeros((20, 20, 20), np.float32), affine)
    assert zeros.stat().st_size < 2000  # the default level still compresses


def test_coarse_adam_pass_runs_and_keeps_the_result_close():
    image = torch.rand(1, 1, 24, 24, 24, generator=torch.Generator().manual_seed(2))
    moving = torch.roll(image, 2, dims=2)
    fixed_f, moving_f = mind_ssc(image), mind_ssc(moving)
    base = HybridConfig(grid_spacing=4, search_step=2, search_radius=2, adam_iterations=10)
    plain = convex_adam(fixed_f, moving_f, base)
    two = convex_adam(fixed_f, moving_f, base.replace(adam_coarse_iterations=10))
    assert two.shape == plain.shape == (1, 3, 24, 24, 24)
    assert not torch.equal(two, plain)
    inner = (slice(None), 0, slice(6, -6), slice(6, -6), slice(6, -6))
    # both find the roll of 2 voxels along the first axis inside the volume
    assert abs(float(plain[inner].mean()) - 2) < 0.5 and abs(float(two[inner].mean()) - 2) < 0.5
