import numpy as np
import pytest
from PIL import Image

from medfoundry.data import DatabaseWriter, MultiTaskDatabase, TaskSpec
from medfoundry.data.inspect import contact_sheet, summarize, summary_table


def test_summary_counts_match_hand_computed_values(toy_db):
    by_name = {s["name"]: s for s in summarize(toy_db)}
    # toy_cls: label = i % 4 over 24 samples -> 6 each; splits 60/20/20 % of 24 = 14/5/5
    assert by_name["toy_cls"]["balance"]["counts"] == {"tl": 6, "tr": 6, "bl": 6, "br": 6}
    assert by_name["toy_cls"]["splits"] == {"train": 14, "val": 5, "test": 5}
    # toy_multilabel: red = i % 2, green = (i // 2) % 2 -> 12 each; neither when i % 4 == 0 -> 6
    assert by_name["toy_multilabel"]["balance"] == {"positives": {"red": 12, "green": 12}, "none": 6}
    # toy_seg: one 8x8 square in 32x32 -> 64 / 1024 = 6.25 % foreground
    seg = by_name["toy_seg"]["balance"]
    assert seg["pixel_share"]["square"] == pytest.approx(0.0625)
    assert seg["samples_with"] == {"background": 24, "square": 24}
    det = by_name["toy_det"]["balance"]
    assert det["num_boxes"] == 24 and det["boxes_per_image_mean"] == 1.0 and det["boxes_per_class"] == {"square": 24}


def test_detection_balance_with_empty_images(tmp_path):
    spec = TaskSpec("d", "detection", ("a", "b"), "other", 2, (8, 8), 1)
    with DatabaseWriter(tmp_path / "db", name="x") as w:
        tw = w.add_task(spec, n=3)
        tw.set_sample(0, np.zeros((1, 8, 8)), {"boxes": [[0, 0, 2, 2], [1, 1, 3, 3], [4, 4, 8, 8]],
                                               "labels": [0, 1, 1]})
        tw.set_sample(1, np.zeros((1, 8, 8)), {"boxes": [], "labels": []})
        tw.set_sample(2, np.zeros((1, 8, 8)), {"boxes": [[0, 0, 1, 1]], "labels": [1]})
        tw.set_splits({"train": [0, 1, 2]})
    det = summarize(tmp_path / "db")[0]["balance"]
    assert det == {"num_boxes": 4, "boxes_per_image_mean": pytest.approx(4 / 3), "boxes_per_image_max": 3,
                   "images_without_boxes": 1, "boxes_per_class": {"a": 1, "b": 3}}


def test_table_and_contact_sheet(toy_db, tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(summary_table(summarize(toy_db)))
    text = console.export_text()
    assert "toy_seg" in text and "square: 6.25%" in text and "14/5/5" in text
    out = contact_sheet(toy_db, tmp_path / "sheet.png", per_task=3, seed=1)
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert not list(tmp_path.glob(".sheet.png*"))  # atomic write left no temp file
    # same seed -> same bytes; different seed -> different samples
    again = contact_sheet(toy_db, tmp_path / "again.png", per_task=3, seed=1)
    assert again.read_bytes() == out.read_bytes()
    other = contact_sheet(MultiTaskDatabase.open(toy_db.root), tmp_path / "other.png", per_task=3, seed=2)
    assert other.read_bytes() != out.read_bytes()


def test_3d_task_summary_and_sheet(tmp_path):
    spec = TaskSpec("vol", "segmentation", ("bg", "organ"), "tomographic", 3, (4, 6, 6), 1)
    with DatabaseWriter(tmp_path / "db", name="x") as w:
        tw = w.add_task(spec, n=2)
        for i in range(2):
            mask = np.zeros((4, 6, 6), np.uint8)
            mask[2, :3, :3] = 1  # 9 of 144 voxels, only on the middle slice
            tw.set_sample(i, np.ones((1, 4, 6, 6)) * 0.5, mask)
        tw.set_splits({"train": [0], "val": [1]})
    s = summarize(tmp_path / "db")[0]
    assert s["balance"]["pixel_share"]["organ"] == pytest.approx(9 / 144)
    assert contact_sheet(tmp_path / "db", tmp_path / "v.png", per_task=2).stat().st_size > 1000
