"""Transfer sweeps on the toy database: every task kind, both modes, resumable, frozen features once."""

import json
import math

import pytest
import torch

from medfoundry.errors import ConfigError
from medfoundry.transfer import FeatureCache, TransferConfig, parse_encoder, run_sweep, run_transfer
from medfoundry.transfer.results import ResultStore

TINY = dict(fractions=(0.5, 1.0), seeds=1, max_epochs=2, min_steps=3, max_steps=4, min_eval_interval=2,
            patience=2, n_boot=20, progress=False, device="cpu", eval_batch_size=16)


@pytest.fixture(scope="module")
def random_sweep(toy_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    store = run_sweep(toy_db.root, ["random"], out, tasks=list(toy_db.tasks), modes=("frozen", "finetune"),
                      fail_fast=True, **TINY)
    return out, store


def test_every_kind_and_mode_runs_on_the_test_split(toy_db, random_sweep):
    out, store = random_sweep
    assert len(store.records) == 4 * 2 * 2
    for r in store.records:
        assert r["status"] == "ok", r
        task = r["task"]
        # the subset is exactly the database's nested stratified fraction; the score is on test only
        assert r["n_train"] == len(toy_db.fraction_indices(task, r["fraction"], r["seed"]))
        assert r["n_test"] == len(toy_db.split_indices(task, "test"))
        assert r["primary_metric"] in r["metrics"] and r["primary"] == r["metrics"][r["primary_metric"]]
        assert len(r["bootstrap"]) == 20
        assert 1 <= r["steps"] <= 4
    kinds = {r["kind"] for r in store.records}
    assert kinds == {"classification", "multilabel", "segmentation", "detection"}
    seg = [r for r in store.records if r["kind"] == "segmentation"]
    assert all("hd95" in r["metrics"] for r in seg)
    assert (out / "results.csv").read_text().count("\n") == 17
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["transfer"]["fractions"] == [0.5, 1.0]
    assert "torch" in json.loads((out / "versions.json").read_text())


def test_resume_skips_done_runs(toy_db, random_sweep):
    out, store = random_sweep
    new = []
    run_sweep(toy_db.root, ["random"], out, tasks=list(toy_db.tasks), modes=("frozen", "finetune"),
              on_run=new.append, **TINY)
    assert new == []
    # drop one record: exactly that run is redone
    victim = store.records[3]["run_id"]
    s = ResultStore(out)
    s.records = [r for r in s.records if r["run_id"] != victim]
    s.save()
    run_sweep(toy_db.root, ["random"], out, tasks=list(toy_db.tasks), modes=("frozen", "finetune"),
              on_run=new.append, **TINY)
    assert [r["run_id"] for r in new] == [victim]
    assert len(ResultStore(out)) == 16


def test_changed_settings_refuse_to_mix(toy_db, random_sweep):
    out, _ = random_sweep
    with pytest.raises(ConfigError, match="lr"):
        run_sweep(toy_db.root, ["random"], out, tasks=["toy_cls"], **{**TINY, "lr": 0.5})


@pytest.fixture(scope="module")
def saved_model(toy_db, tmp_path_factory):
    from medfoundry.models import FoundationModel

    torch.manual_seed(0)
    model = FoundationModel("resnet_small", tasks=[toy_db.task("toy_cls"), toy_db.task("toy_seg")])
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "mt")


def test_frozen_features_computed_once_per_task(toy_db, saved_model, tmp_path, monkeypatch):
    from medfoundry.models import EncoderWithAdapters

    calls = {"features": 0}
    original = EncoderWithAdapters.forward

    def counting(self, *a, **k):  # embed() and features() both run the trunk's forward
        calls["features"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(EncoderWithAdapters, "forward", counting)
    cache = FeatureCache()
    store = run_sweep(toy_db.root, [f"mt={saved_model}"], tmp_path, tasks=["toy_cls", "toy_seg"], modes=("frozen",),
                      baseline=False, feature_cache=cache, fail_fast=True, **{**TINY, "seeds": 2})
    runs = [r for r in store.records if r["encoder"] == "mt"]
    assert len(runs) == 2 * 2 * 2 and {r["encoder_kind"] for r in runs} == {"multi-task"}
    # one extraction per task, each one pass over the 24 samples in batches of 16 -> 2 calls
    assert cache.extractions == 2
    assert calls["features"] == 2 * math.ceil(24 / 16)


def test_run_transfer_single_mode_no_baseline(toy_db, saved_model, tmp_path):
    recs = run_transfer(f"mt={saved_model}", toy_db.root, "toy_det", mode="finetune", fractions=(1.0,), seeds=1,
                        out=tmp_path, **{k: v for k, v in TINY.items() if k not in ("fractions", "seeds")})
    assert len(recs) == 1 and recs[0]["mode"] == "finetune" and recs[0]["status"] == "ok"
    assert {r["encoder"] for r in ResultStore(tmp_path).records} == {"mt"}


def test_parse_encoder(tmp_path, saved_model):
    assert parse_encoder("random").kind == "random"
    assert parse_encoder("random:convnext_small").label == "random_convnext_small"
    assert parse_encoder("base=random").label == "base"
    assert parse_encoder(f"x={saved_model}").kind == "multi-task"
    s = parse_encoder("single:toy_cls")
    assert s.kind == "single-task" and s.pretrain_task == "toy_cls"
    with pytest.raises(ConfigError, match="does not exist"):
        parse_encoder(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="label"):
        parse_encoder("bad label=random")


def test_plain_state_dict_encoder(toy_db, tmp_path):
    from safetensors.torch import save_file

    from medfoundry.models import create_encoder
    from medfoundry.transfer import build_model

    enc = create_encoder("resnet_small", spatial_dims=2, in_channels=16)
    path = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(path))
    src = parse_encoder(f"{path}@resnet_small")
    assert src.kind == "weights"
    model = build_model(src, toy_db.task("toy_cls"), TransferConfig(), seed=0)
    w = dict(model.trunk.encoder.state_dict())
    assert all(torch.equal(w[k], v) for k, v in enc.state_dict().items())
    assert list(model.task_specs) == ["toy_cls"]


def test_pretrained_heads_dropped_and_trunk_kept(toy_db, saved_model):
    from medfoundry.models import FoundationModel
    from medfoundry.transfer import build_model

    src = parse_encoder(str(saved_model))
    model = build_model(src, toy_db.task("toy_det"), TransferConfig(), seed=0)
    ref = FoundationModel.from_pretrained(saved_model)
    assert list(model.heads) == ["toy_det"]
    a, b = model.trunk.state_dict(), ref.trunk.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_single_task_baseline_is_pretrained_once(toy_db, tmp_path):
    cfg = {**TINY, "fractions": (1.0,), "single_task_rounds": 2}
    store = run_sweep(toy_db.root, ["single:toy_cls"], tmp_path, tasks=["toy_seg"], modes=("frozen",),
                      baseline=False, fail_fast=True, **cfg)
    (rec,) = store.records
    assert rec["encoder"] == "single_toy_cls" and rec["encoder_kind"] == "single-task" and rec["status"] == "ok"
    model_dir = tmp_path / "encoders" / "single_toy_cls" / "model"
    assert (model_dir / "config.json").is_file()
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    run_sweep(toy_db.root, ["single:toy_cls"], tmp_path, tasks=["toy_multilabel"], modes=("frozen",),
              baseline=False, fail_fast=True, **cfg)
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained


def test_extract_features_shapes(toy_db):
    from medfoundry.transfer import TaskData, build_model, extract_features

    cfg = TransferConfig()
    cls = TaskData(toy_db, "toy_cls")
    model = build_model(parse_encoder("random"), cls.spec, cfg, seed=0)
    last = extract_features(model, cls, 10, torch.device("cpu"))
    multi = extract_features(model, cls, 10, torch.device("cpu"), multiscale=True)
    assert last.shape == (24, model.trunk.embed_dim)
    assert multi.shape == (24, model.trunk.embed_dim_multiscale)
    # the last stage's pooled features are the tail of the multi-scale vector
    assert torch.allclose(multi[:, -model.trunk.embed_dim:], last, atol=1e-5)
    seg = TaskData(toy_db, "toy_seg")
    maps = extract_features(build_model(parse_encoder("random"), seg.spec, cfg, seed=0), seg, 10, torch.device("cpu"))
    assert [m.shape[0] for m in maps] == [24] * len(maps) and maps[0].shape[2:] == (8, 8)  # 32 px / reduction 4


def test_label_cannot_change_meaning(toy_db, random_sweep):
    out, _ = random_sweep
    with pytest.raises(ConfigError, match="label 'random'"):
        run_sweep(toy_db.root, ["random=random:convnext_small"], out, tasks=["toy_cls"], modes=("frozen", "finetune"),
                  **TINY)
