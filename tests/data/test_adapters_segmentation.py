import numpy as np
import pytest
import tifffile
from PIL import Image

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.adapters import import_segmentation_folders
from medfoundry.errors import DataError


def _case(tmp_path, name, value, mask_fmt="png", suffix="_mask"):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "msk").mkdir(exist_ok=True)
    img = np.zeros((8, 8), np.uint8)
    img[2:6, 2:6] = 200
    Image.fromarray(img).save(tmp_path / "img" / f"{name}.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = value
    if mask_fmt == "png":
        Image.fromarray(mask).save(tmp_path / "msk" / f"{name}{suffix}.png")
    else:
        tifffile.imwrite(tmp_path / "msk" / f"{name}{suffix}.tif", mask)


def test_mask_values_mapped_and_resized_nearest(tmp_path):
    for i in range(6):
        _case(tmp_path, f"c{i}", 255, mask_fmt="png" if i % 2 else "tif")
    res = import_segmentation_folders(tmp_path / "img", tmp_path / "msk", tmp_path / "db", "nuclei",
                                      modality="microscopic", image_size=(4, 4))
    assert res.spec.classes == ("background", "class_255")
    db = MultiTaskDatabase.open(tmp_path / "db")
    mask = db.target("nuclei", 0)
    expected = np.zeros((4, 4), np.int64)
    expected[1:3, 1:3] = 1  # the 4x4 square at 2..6 of 8 -> 1..3 of 4
    np.testing.assert_array_equal(mask, expected)
    assert set(np.unique(db.image("nuclei", 0))) != {0}


def test_explicit_mask_values_and_unmapped_value_error(tmp_path):
    _case(tmp_path, "a", 128, suffix="_seg")
    _case(tmp_path, "b", 255, suffix="_seg")
    _case(tmp_path, "c", 255, suffix="_seg")
    res = import_segmentation_folders(tmp_path / "img", tmp_path / "msk", tmp_path / "db", "t", modality="other",
                                      image_size=(8, 8), classes=["bg", "edge", "core"], mask_values=[0, 128, 255])
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert res.spec.classes == ("bg", "edge", "core")
    assert db.target("t", 0).max() == 1 and db.target("t", 1).max() == 2
    with pytest.raises(DataError, match=r"b_seg.png.*\[255\]"):
        import_segmentation_folders(tmp_path / "img", tmp_path / "msk", tmp_path / "db", "t2", modality="other",
                                    image_size=(8, 8), mask_values=[0, 128])


def test_image_without_mask_is_named(tmp_path):
    _case(tmp_path, "a", 1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img" / "lonely.png")
    with pytest.raises(DataError, match="lonely.png"):
        import_segmentation_folders(tmp_path / "img", tmp_path / "msk", tmp_path / "db", "t", modality="other",
                                    image_size=(8, 8))
