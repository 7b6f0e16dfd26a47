"""Brain-tumour phantoms: nnU-Net layout, BraTS nesting, same seed same bytes, held-out cases stable."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medfoundry.data.synthetic.phantoms3d import SEQUENCES, make_phantoms


@pytest.mark.slow
def test_phantoms_are_seeded_nested_and_held_out(tmp_path):
    a = make_phantoms(tmp_path / "a", "brain_tumour", cases=2, test_cases=1, seed=5, spacing=6.0)
    b = make_phantoms(tmp_path / "b", "brain_tumour", cases=1, test_cases=1, seed=5, spacing=6.0)
    meta = json.loads((a / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3} and meta["numTraining"] == 2
    assert sorted(p.name for p in (a / "imagesTr").iterdir())[:4] == [f"BRATSPH_0000_{c:04d}.nii.gz"
                                                                      for c in range(len(SEQUENCES))]
    # the held-out case depends on the seed only, not on how many training cases were made
    assert (a / "imagesTs" / "BRATSPH_0002_0003.nii.gz").read_bytes() == \
        (b / "imagesTs" / "BRATSPH_0001_0003.nii.gz").read_bytes()
    assert (a / "labelsTr" / "BRATSPH_0000.nii.gz").read_bytes() == (b / "labelsTr" / "BRATSPH_0000.nii.gz").read_bytes()
    label = np.asarray(nib.load(str(a / "labelsTr" / "BRATSPH_0001.nii.gz")).dataobj)
    image = nib.load(str(a / "imagesTr" / "BRATSPH_0001_0001.nii.gz")).get_fdata()
    assert set(np.unique(label)) == {0, 1, 2, 3}
    # ET is a rim around the necrotic core: enhancing voxels are brighter on T1c than oedema
    assert image[label == 3].mean() > 1.3 * image[label == 2].mean()
    shapes = {nib.load(str(p)).shape for p in (a / "labelsTr").iterdir()}
    assert len(shapes) == 2  # random fields of view: cases differ in shape


def test_kidney_phantoms_are_anisotropic_ct_with_kits_labels(tmp_path):
    out = make_phantoms(tmp_path / "k", "kidney", cases=2, test_cases=0, seed=1)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["regions"] == "KID=1,2,3;MASS=2,3;TUM=2"
    img = nib.load(str(out / "imagesTr" / "KIDPH_0000_0000.nii.gz"))
    label = np.asarray(nib.load(str(out / "labelsTr" / "KIDPH_0000.nii.gz")).dataobj)
    assert img.header.get_zooms() == (3.0, 3.0, 6.0)
    hu = img.get_fdata()
    assert {1, 2} <= set(np.unique(label)) and hu.min() < -800  # air around the body
    assert hu[label == 1].mean() > hu[label == 2].mean() + 40  # enhancing kidney, darker tumour
    assert not any((out / "imagesTs").glob("*"))
