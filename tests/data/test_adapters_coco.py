import json

import numpy as np
import pytest
from PIL import Image

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.adapters import import_coco
from medfoundry.errors import DataError


def _coco(tmp_path, n=6, name="ann.json"):
    (tmp_path / "images").mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(n):
        Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"images/{i}.png", "height": 20, "width": 40})
    anns.append({"id": 1, "image_id": 100, "bbox": [4, 2, 10, 6], "category_id": 7, "iscrowd": 0})
    anns.append({"id": 2, "image_id": 100, "bbox": [30, 10, 20, 20], "category_id": 3})  # runs past the edge
    anns.append({"id": 3, "image_id": 101, "bbox": [1, 1, 5, 5], "category_id": 3, "iscrowd": 1})
    cats = [{"id": 7, "name": "mitosis"}, {"id": 3, "name": "cell"}]
    (tmp_path / name).write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return tmp_path / name


def test_boxes_converted_scaled_and_clipped(tmp_path):
    res = import_coco(_coco(tmp_path), tmp_path / "db", "cells", modality="microscopic", image_size=(10, 10))
    assert res.spec.classes == ("cell", "mitosis")  # ordered by category id: 3, 7
    assert any("crowd" in n for n in res.notes)
    db = MultiTaskDatabase.open(tmp_path / "db")
    t = db.target("cells", 0)
    # x scale 10/40, y scale 10/20: [4,2,14,8] -> [1,1,3.5,4]; [30,10,50->40,30->20] -> [7.5,5,10,10]
    np.testing.assert_allclose(t["boxes"], [[1, 1, 3.5, 4], [7.5, 5, 10, 10]])
    assert t["labels"].tolist() == [1, 0]
    assert len(db.target("cells", 1)["labels"]) == 0  # crowd box dropped, image kept


def test_split_per_file_and_size_mismatch(tmp_path):
    a = _coco(tmp_path, 3, "train.json")
    b = _coco(tmp_path, 2, "val.json")
    res = import_coco({"train": a, "valid": b}, tmp_path / "db", "d", modality="other", image_size=(8, 8))
    assert res.split_sizes == {"train": 3, "val": 2, "test": 0}
    data = json.loads(a.read_text())
    data["images"][0]["width"] = 41
    a.write_text(json.dumps(data))
    with pytest.raises(DataError, match="width=41"):
        import_coco(a, tmp_path / "db", "d2", modality="other", image_size=(8, 8))
    assert "d2" not in MultiTaskDatabase.open(tmp_path / "db").tasks


def test_pad_fit_shifts_boxes(tmp_path):
    import_coco(_coco(tmp_path), tmp_path / "db", "cells", modality="microscopic", image_size=(10, 10), fit="pad")
    db = MultiTaskDatabase.open(tmp_path / "db")
    # 20x40 -> scale 0.25 -> 5x10 content at row offset 2: [4,2,14,8] -> [1, 0.5+2, 3.5, 2+2]
    np.testing.assert_allclose(db.target("cells", 0)["boxes"][0], [1, 2.5, 3.5, 4])
    assert db.image("cells", 0).shape == (1, 10, 10)
