"""`medfoundry register` and `medfoundry l2r run` on tiny NIfTI volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from medfoundry.cli.main import app, main
from medfoundry.randomfields import random_displacement, warp_array

FAST = ["--set", "adam_iterations=5", "--set", "inverse_consistency=false", "--device", "cpu"]


def _phantom(shape=(24, 28, 20), seed=0):
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0).astype(np.float32)
    u = random_displacement(shape, 2.0, 5.0, rng)
    labels = (image > 0).astype(np.uint8) + (image > 0.1).astype(np.uint8)
    return warp_array(image, u), image, labels


@pytest.fixture()
def files(tmp_path):
    fixed, moving, labels = _phantom()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    paths = {}
    for name, array in (("fixed", fixed), ("moving", moving), ("labels", labels)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), str(paths[name]))
    return paths, affine, fixed.shape


def test_register_writes_learn2reg_field_with_fixed_affine(files, tmp_path):
    paths, affine, shape = files
    out = tmp_path / "out" / "disp.nii.gz"
    warped = tmp_path / "out" / "warped_seg.nii.gz"
    warped_img = tmp_path / "out" / "warped.nii.gz"
    result = CliRunner().invoke(app, ["register", str(paths["fixed"]), str(paths["moving"]), "--out", str(out),
                                      "--warp-labels", str(paths["labels"]), "--warped-out", str(warped),
                                      "--warped-image-out", str(warped_img), *FAST])
    assert result.exit_code == 0, result.output
    field = nib.load(str(out))
    assert field.shape == shape + (3,)
    assert field.get_data_dtype() == np.float32
    np.testing.assert_allclose(field.affine, affine)
    seg = np.asarray(nib.load(str(warped)).dataobj)
    assert seg.shape == shape and set(np.unique(seg)) <= {0, 1, 2}
    assert nib.load(str(warped_img)).shape == shape
    meta = json.loads((out.parent / "disp_registration.json").read_text())
    assert meta["config"]["adam_iterations"] == 5 and meta["config"]["inverse_consistency"] is False
    assert not list(out.parent.glob(".*tmp"))  # atomic writes leave no temporaries


def test_register_bad_input_is_one_line_exit_2(files, tmp_path, capsys):
    paths, _, _ = files
    code = main(["register", str(paths["fixed"]), str(tmp_path / "missing.nii.gz"), "--out",
                 str(tmp_path / "d.nii.gz"), "--device", "cpu"])
    assert code == 2
    assert "missing.nii.gz: moving image not found" in capsys.readouterr().err
    code = main(["register", str(paths["fixed"]), str(paths["moving"]), "--out", str(tmp_path / "d.nii.gz"),
                 "--set", "regularization=1"])
    assert code == 2
    assert "did you mean regularisation" in capsys.readouterr().err


def test_l2r_run_writes_official_names_and_runtimes(tmp_path):
    root = tmp_path / "Tiny"
    (root / "imagesTr").mkdir(parents=True)
    pairs = []
    for case in (1, 2):
        fixed, moving, _ = _phantom(seed=case)
        for mod, array in ((0, fixed), (1, moving)):
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(root / "imagesTr" / f"Tiny_{case:04d}_{mod:04d}.nii.gz"))
        pairs.append({"fixed": f"./imagesTr/Tiny_{case:04d}_0000.nii.gz",
                      "moving": f"./imagesTr/Tiny_{case:04d}_0001.nii.gz"})
    (root / "Tiny_dataset.json").write_text(json.dumps({"name": "Tiny", "registration_val": pairs}))
    out = tmp_path / "fields"
    result = CliRunner().invoke(app, ["l2r", "run", "--dataset", str(root), "--split", "val", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    for case in (1, 2):
        field = nib.load(str(out / f"disp_{case:04d}_{case:04d}.nii.gz"))
        assert field.shape == (24, 28, 20, 3)
    runtimes = json.loads((out / "runtimes.json").read_text())
    assert set(runtimes) == {"0001_0001", "0002_0002"} and all(v > 0 for v in runtimes.values())


def test_register_across_grids_rigid_with_world_field(tmp_path):
    """Moving on another (oblique, anisotropic) grid: --rigid, warped outputs on the fixed grid,
    and the world-space field that SimpleITK reads as a displacement."""
    import SimpleITK as sitk
    from reg_world_helpers import grid_affine, mni_2mm, sample_world

    t = mni_2mm()
    fixed_affine = grid_affine((40, 46, 40), (4.5, 4.4, 4.6), (0.0, 0.0, 0.0), (0.0, -18.0, 10.0))
    moving_affine = grid_affine((42, 40, 44), (4.2, 4.8, 4.3), (8.0, -6.0, 12.0), (3.0, -15.0, 12.0))
    paths = {}
    for name, affine, shape in (("fixed", fixed_affine, (40, 46, 40)), ("moving", moving_affine, (42, 40, 44))):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(sample_world(t["image"], t["affine"], shape, affine, 1), affine), str(paths[name]))
    labels = sample_world(t["labels"], t["affine"], (42, 40, 44), moving_affine, 0)
    nib.save(nib.Nifti1Image(labels, moving_affine), str(tmp_path / "labels.nii.gz"))
    out = tmp_path / "o" / "disp.nii.gz"
    result = CliRunner().invoke(app, ["register", str(paths["fixed"]), str(paths["moving"]), "--out", str(out),
                                      "--rigid", "--set", "iterations=10", "--set", "refinements=0", "--device", "cpu",
                                      "--warp-labels", str(tmp_path / "labels.nii.gz"),
                                      "--warped-out", str(tmp_path / "o" / "seg.nii.gz"),
                                      "--warped-image-out", str(tmp_path / "o" / "warped.nii.gz"),
                                      "--world-out", str(tmp_path / "o" / "world.nii.gz")])
    assert result.exit_code == 0, result.output
    for name in ("disp.nii.gz", "seg.nii.gz", "warped.nii.gz"):
        image = nib.load(str(tmp_path / "o" / name))
        assert image.shape[:3] == (40, 46, 40)
        np.testing.assert_allclose(image.affine, fixed_affine, atol=1e-4)
    seg = np.asarray(nib.load(str(tmp_path / "o" / "seg.nii.gz")).dataobj)
    assert set(np.unique(seg)) == {0, 1, 2}
    world = sitk.ReadImage(str(tmp_path / "o" / "world.nii.gz"), sitk.sitkVectorFloat64)
    assert world.GetNumberOfComponentsPerPixel() == 3 and world.GetSize() == (40, 46, 40)
    meta = json.loads((tmp_path / "o" / "disp_registration.json").read_text())
    assert meta["method"] == "rigid" and meta["config"]["model"] == "rigid" and "resample" in meta["stage_times"]


def test_register_method_flags_are_checked(files, tmp_path, capsys):
    paths, _, _ = files
    base = ["register", str(paths["fixed"]), str(paths["moving"]), "--out", str(tmp_path / "d.nii.gz")]
    assert main([*base, "--method", "hybird"]) == 2
    assert "did you mean hybrid" in capsys.readouterr().err
    assert main([*base, "--rigid", "--affine-only"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*base, "--method", "affine", "--preset", "lung_ct"]) == 2
    assert "is for method 'hybrid'" in capsys.readouterr().err
    assert main([*base, "--affine-only", "--deformable", "--set", "adam_iterations=2", "--set",
                 "inverse_consistency=false", "--set", "affine_iterations=3", "--device", "cpu"]) == 0
    meta = json.loads((tmp_path / "d_registration.json").read_text())
    assert meta["method"] == "hybrid" and meta["config"]["affine"] is True
