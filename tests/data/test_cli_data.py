import json
import shutil
import sys
import types

import numpy as np
from PIL import Image

from medfoundry.cli.main import main
from medfoundry.data import MultiTaskDatabase


def test_validate_ok_and_broken(toy_db, tmp_path, capsys):
    assert main(["data", "validate", str(toy_db.root), "--no-progress"]) == 0
    assert "no problems" in capsys.readouterr().out
    db = tmp_path / "db"
    shutil.copytree(toy_db.root, db)
    labels = np.load(db / "tasks/toy_cls/labels.npy")
    labels[0] = 9
    np.save(db / "tasks/toy_cls/labels.npy", labels)
    assert main(["data", "validate", str(db), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "labels.npy" in out and "1 error(s)" in out
    assert main(["data", "validate", str(db), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert [(p["field"], p["severity"]) for p in problems] == [("labels", "error")]
    assert problems[0]["path"].endswith("toy_cls/labels.npy") and "sample 0 = 9" in problems[0]["message"]


def test_validate_missing_folder_is_an_error_line(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_inspect_json_and_sheet(toy_db, tmp_path, capsys):
    assert main(["data", "inspect", str(toy_db.root), "--task", "toy_cls", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert summary[0]["balance"]["counts"] == {"tl": 6, "tr": 6, "bl": 6, "br": 6}
    sheet = tmp_path / "s.png"
    assert main(["data", "inspect", str(toy_db.root), "--sheet", str(sheet), "--per-task", "2"]) == 0
    assert sheet.stat().st_size > 1000
    # unknown task: a one-line error and exit code 2 from cli.main
    assert main(["data", "inspect", str(toy_db.root), "--task", "toy_clss"]) == 2
    assert "did you mean toy_cls" in capsys.readouterr().err


def test_import_image_folder_then_csv_into_same_db(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((9, 9), 20 * i, np.uint8)).save(tmp_path / "src" / c / f"{i}.png")
    db = tmp_path / "db"
    args = ["data", "import", "image-folder", str(tmp_path / "src"), "--db", str(db), "--task", "folder_cls",
            "--modality", "other", "--size", "8", "8", "--split-ratios", "0.6", "0.2", "0.2", "--seed", "1"]
    assert main(args) == 0
    assert "folder_cls" in capsys.readouterr().out
    rows = ["path,label"] + [f"src/{c}/{i}.png,{c}" for c in "ab" for i in range(5)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "import", "csv", str(tmp_path / "t.csv"), "--db", str(db), "--task", "csv_cls",
                 "--modality", "x-ray", "--size", "6", "6"]) == 0
    database = MultiTaskDatabase.open(db)
    assert database.task_names() == ["folder_cls", "csv_cls"]
    assert database.task("folder_cls").image_size == (8, 8) and database.task("csv_cls").image_size == (6, 6)
    assert main(args) == 2  # same task name again
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "validate", str(db)]) == 0


def test_import_segmentation_cli_with_mask_values(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "im" / f"{i}.png")
        m = np.zeros((8, 8), np.uint8)
        m[:4] = 255
        Image.fromarray(m).save(tmp_path / "mk" / f"{i}.png")
    assert main(["data", "import", "segmentation", str(tmp_path / "im"), str(tmp_path / "mk"), "--db",
                 str(tmp_path / "db"), "--task", "seg", "--modality", "microscopic", "--size", "4", "4",
                 "--classes", "bg,cell", "--mask-values", "0,255"]) == 0
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.task("seg").classes == ("bg", "cell") and db.target("seg", 0)[:2].min() == 1
    assert main(["data", "import", "segmentation", str(tmp_path / "im"), str(tmp_path / "mk"), "--db",
                 str(tmp_path / "db"), "--task", "seg2", "--modality", "microscopic", "--mask-values", "0,x"]) == 2


def test_make_synthetic_calls_the_generator(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(out, seed, scale, overwrite, progress, with_3d=False, tasks=None):
        from medfoundry.testing import make_toy_database

        calls.append((str(out), seed, scale, overwrite, progress, tasks))
        return make_toy_database(out, seed=seed)

    module = types.ModuleType("medfoundry.data.synthetic")
    module.make_synthetic_database = fake
    monkeypatch.setitem(sys.modules, "medfoundry.data.synthetic", module)
    out = tmp_path / "syn"
    assert main(["data", "make-synthetic", str(out), "--seed", "3", "--scale", "small", "--overwrite"]) == 0
    assert calls == [(str(out), 3, "small", True, True, None)]
    assert "toy_det" in capsys.readouterr().out
    assert main(["data", "make-synthetic", str(out), "--tasks", "mri_tissue_seg, stain_atypia_cls",
                 "--overwrite"]) == 0
    assert calls[-1][-1] == ["mri_tissue_seg", "stain_atypia_cls"]
    assert main(["data", "make-synthetic", str(out), "--scale", "huge"]) == 2  # usage error from click


def test_import_volumes_coco_and_medmnist_cli(tmp_path, capsys):
    import nibabel as nib

    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    for c in range(3):
        lab = np.zeros((8, 8, 4), np.uint8)
        lab[2:6, 2:6, 1:3] = 2
        img = np.where(lab > 0, 100.0, -1000.0).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "im" / f"c{c}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "lab" / f"c{c}_seg.nii.gz")
    db = tmp_path / "db"
    assert main(["data", "import", "volumes", str(tmp_path / "im"), str(tmp_path / "lab"), "--db", str(db),
                 "--task", "vol", "--size", "8", "8", "--label-values", "0,2", "--classes", "bg,organ",
                 "--window", "100", "200", "--intensity", "ct", "--image-dtype", "float32"]) == 0
    database = MultiTaskDatabase.open(db)
    assert database.num_samples("vol") == 6 and database.target("vol", 0).max() == 1
    assert database.image("vol", 0).max() == np.float32(0.5)  # 100 HU in window 100/200 -> 0.5
    assert main(["data", "import", "volumes", str(tmp_path / "im"), str(tmp_path / "lab"), "--db", str(db),
                 "--task", "vol3d", "--depth", "4", "--size", "8", "8", "--label-values", "0,2"]) == 0
    assert MultiTaskDatabase.open(db).task("vol3d").image_size == (4, 8, 8)

    import json as _json
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "images/a.png", "height": 10, "width": 10}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 1}],
            "categories": [{"id": 1, "name": "cell"}]}
    for name in ("tr.json", "va.json"):
        (tmp_path / name).write_text(_json.dumps(coco))
    assert main(["data", "import", "coco", str(tmp_path / "tr.json"), "--val-json", str(tmp_path / "va.json"),
                 "--db", str(db), "--task", "det", "--modality", "microscopic", "--size", "10", "10"]) == 0
    database = MultiTaskDatabase.open(db)
    assert database.split_indices("det", "val").tolist() == [1]
    np.testing.assert_allclose(database.target("det", 0)["boxes"], [[1, 2, 4, 6]])

    arrays = {f"{s}_{k}": (np.zeros((2, 28, 28), np.uint8) if k == "images" else np.array([[0], [1]]))
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "m.npz", **arrays)
    assert main(["data", "import", "medmnist", str(tmp_path / "m.npz"), "--db", str(db), "--task", "mnist",
                 "--modality", "x-ray", "--size", "14", "14", "--classes", "no,yes"]) == 0
    assert MultiTaskDatabase.open(db).task("mnist").image_size == (14, 14)
    assert main(["data", "validate", str(db), "--no-progress"]) == 0


def test_fit_pad_option_and_help(tmp_path, capsys):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "b").mkdir(parents=True)
    for c in "ab":
        Image.fromarray(np.full((10, 20), 255, np.uint8)).save(tmp_path / "src" / c / "x.png")
    assert main(["data", "import", "image-folder", str(tmp_path / "src"), "--db", str(tmp_path / "db"), "--task",
                 "t", "--modality", "other", "--size", "8", "8", "--fit", "pad", "--split-ratios", "1", "0", "0"]) == 0
    img = MultiTaskDatabase.open(tmp_path / "db").image("t", 0)[0]
    assert img[:2].max() == 0 and img[2:6].min() > 0.99  # letterboxed: 4 content rows centred
    for cmd in (["data", "--help"], ["data", "import", "--help"], ["data", "import", "coco", "--help"]):
        assert main(cmd) == 0
    assert "--val-json" in capsys.readouterr().out
