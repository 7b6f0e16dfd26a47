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

    def fake(out, seed, scale, overwrite, progress):
        from medfoundry.testing import make_toy_database

        calls.append((str(out), seed, scale, overwrite, progress))
        return make_toy_database(out, seed=seed)

    module = types.ModuleType("medfoundry.data.synthetic")
    module.make_synthetic_database = fake
    monkeypatch.setitem(sys.modules, "medfoundry.data.synthetic", module)
    out = tmp_path / "syn"
    assert main(["data", "make-synthetic", str(out), "--seed", "3", "--scale", "small", "--overwrite"]) == 0
    assert calls == [(str(out), 3, "small", True, True)]
    assert "toy_det" in capsys.readouterr().out
    assert main(["data", "make-synthetic", str(out), "--scale", "huge"]) == 2  # usage error from click
