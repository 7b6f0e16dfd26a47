"""FoundationModel: forward paths, gradients, adapters' fallback rule, save/load, overfit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfoundry.data.loading import BatchStream, TaskDataset
from medfoundry.data.tasks import TaskSpec
from medfoundry.errors import CheckpointError, ConfigError
from medfoundry.models import EncoderWithAdapters, FoundationModel, load_encoder, load_encoder_state
from medfoundry.models.stems import AdapterBank, adapt_input_weight


def _batches(db, size=6, seed=0):
    return {t: BatchStream(TaskDataset(db, t), size, seed=seed).next_batch() for t in db.tasks}


@pytest.fixture(scope="module")
def batches(toy_db):
    return _batches(toy_db)


def _model(toy_db, **kw):
    torch.manual_seed(0)
    return FoundationModel("resnet_small", tasks=list(toy_db.tasks.values()), decoder_channels=32, **kw)


def test_forward_shapes_and_decode(toy_db, batches):
    model = _model(toy_db).eval()
    assert sorted(model.task_specs) == sorted(toy_db.tasks)
    # add_task gives every modality/channel key its own adapter
    assert model.adapters.keys() == ["x-ray:1", "microscopic:3", "tomographic:1", "microscopic:1"]
    with torch.no_grad():
        assert model(batches["toy_cls"]["image"], "toy_cls").shape == (6, 4)
        assert model(batches["toy_multilabel"]["image"], "toy_multilabel").shape == (6, 2)
        assert model(batches["toy_seg"]["image"], "toy_seg").shape == (6, 2, 32, 32)
        det = model(batches["toy_det"]["image"], "toy_det")
    assert det["heatmap"].shape == (6, 1, 8, 8) and det["regression"].shape == (6, 4, 8, 8)
    preds = model.predict(batches["toy_seg"]["image"], "toy_seg")
    assert len(preds) == 6 and preds[0].shape == (32, 32) and preds[0].dtype == np.int64
    feats = model.features(batches["toy_cls"]["image"], "x-ray")
    assert [f.shape[1] for f in feats] == [32, 64, 128, 256]
    assert model.embed(batches["toy_cls"]["image"], "x-ray").shape == (6, 256)
    assert model.embed(batches["toy_cls"]["image"], "x-ray", multiscale=True).shape == (6, 480)
    with pytest.raises(ConfigError, match="toy_cls"):
        model(batches["toy_cls"]["image"], "toy_clss")
    with pytest.raises(ValueError, match="channels"):
        model.features(batches["toy_cls"]["image"], "x-ray", channels=3)


def test_only_the_task_path_gets_gradients(toy_db, batches):
    model = _model(toy_db)
    b = batches["toy_cls"]
    model.loss(model(b["image"], "toy_cls"), b["target"], "toy_cls").backward()
    grads = {n: p.grad is not None for n, p in model.named_parameters()}
    assert all(v for n, v in grads.items() if n.startswith(("trunk.encoder.", "heads.toy_cls.",
                                                            "trunk.adapters.adapters.x-ray:1.")))
    assert not any(v for n, v in grads.items() if n.startswith(("decoder.", "heads.toy_seg.", "heads.toy_det.",
                                                                "heads.toy_multilabel.",
                                                                "trunk.adapters.adapters.microscopic:3.")))
    model.zero_grad(set_to_none=True)
    b = batches["toy_seg"]
    model.loss(model(b["image"], "toy_seg"), b["target"], "toy_seg").backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert all(p.grad is None for p in model.heads["toy_cls"].parameters())
    trunk = {id(p) for p in model.trunk_parameters()}
    heads = {id(p) for t in model.heads for p in model.head_parameters(t)}
    assert not trunk & heads and len(trunk) + len(heads) == len(list(model.parameters()))


def test_place_moves_only_active_heads(toy_db):
    model = _model(toy_db)
    model.place("meta", active=["toy_seg"])
    assert all(p.device.type == "meta" for p in model.trunk_parameters())
    assert all(p.device.type == "meta" for p in model.heads["toy_seg"].parameters())
    assert all(p.device.type == "cpu" for p in model.heads["toy_cls"].parameters())


def test_add_task_rules(toy_db):
    model = _model(toy_db)
    spec = toy_db.task("toy_cls")
    assert model.add_task(spec) is model.heads["toy_cls"]
    other = TaskSpec("toy_cls", "classification", ("a", "b"), "x-ray", 2, (32, 32), 1)
    with pytest.raises(ConfigError, match="different task"):
        model.add_task(other)
    vol = TaskSpec("vol", "segmentation", ("bg", "fg"), "tomographic", 3, (16, 16, 16), 1)
    with pytest.raises(ConfigError, match="spatial_dims"):
        model.add_task(vol)
    model.remove_task("toy_cls")
    assert "toy_cls" not in model.heads and "x-ray:1" in model.adapters


def test_adapter_fallback_rule():
    torch.manual_seed(0)
    bank = AdapterBank(2, 8)
    bank.add("x-ray", 1)
    bank.add("microscopic", 3)
    bank.add("tomographic", 1)
    # 1. exact; 2. same channel count: the first in insertion order, model unchanged
    assert bank.resolve("tomographic", 1).rule == "exact"
    r = bank.resolve("other", 1)
    assert (r.used, r.rule) == ("x-ray:1", "same_channels")
    r = bank.resolve("x-ray", 3)
    assert (r.used, r.rule) == ("microscopic:3", "same_channels")
    img = torch.rand(2, 1, 16, 16)
    assert torch.equal(bank(img, "other"), bank.adapters["x-ray:1"](img))
    assert bank.keys() == ["x-ray:1", "microscopic:3", "tomographic:1"]
    # 3. new channel count: created from the same modality's adapter ...
    assert bank.resolve("x-ray", 4).rule == "new_from:x-ray:1"
    assert bank.resolve("microscopic", 4).rule == "new_from:microscopic:3"
    # ... or, without one, from the first adapter
    assert bank.resolve("other", 2).rule == "new_from:x-ray:1"
    # dedicated: a same-channel key gets its own adapter, a copy of the borrowed one
    res = bank.ensure("other", 3, dedicated=True)
    assert res.rule == "new_from:microscopic:3" and bank.keys()[-1] == "other:3"
    rgb = torch.rand(2, 3, 16, 16)
    assert torch.equal(bank(rgb, "other"), bank.adapters["microscopic:3"](rgb))
    assert bank.adapters["other:3"].conv.weight is not bank.adapters["microscopic:3"].conv.weight
    with torch.no_grad():
        bank.adapters["x-ray:1"].scale.mul_(1.7)  # a "trained" adapter
        bank.adapters["x-ray:1"].shift.add_(0.3)
    bank.ensure("x-ray", 4)
    assert bank.keys()[-1] == "x-ray:4" and "x-ray:4" in bank
    # an image whose 4 channels copy one grey plane gives the grey adapter's output
    grey = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(bank(grey.repeat(1, 4, 1, 1), "x-ray"), bank(grey, "x-ray"), atol=1e-5)
    # RGB -> grey sums the colour weights: grey input == RGB input with three equal planes
    bank2 = AdapterBank(2, 8)
    bank2.add("microscopic", 3)
    bank2.ensure("microscopic", 1)
    with torch.no_grad():
        assert torch.allclose(bank2(grey, "microscopic"), bank2(grey.repeat(1, 3, 1, 1), "microscopic"), atol=1e-5)
    # 4. empty bank: fresh adapter
    empty = AdapterBank(2, 8)
    assert empty.ensure("x-ray", 1).rule == "new" and empty.keys() == ["x-ray:1"]
    with pytest.raises(ConfigError, match="modality"):
        bank.resolve("ultrasound", 1)


def test_adapt_input_weight_hand_values():
    w = torch.tensor([[[[1.0]], [[2.0]], [[3.0]]]])  # (1, 3, 1, 1)
    assert adapt_input_weight(w, 1).flatten().tolist() == [6.0]
    np.testing.assert_allclose(adapt_input_weight(w, 6).flatten().numpy(), [0.5, 1, 1.5, 0.5, 1, 1.5])


def test_save_load_round_trip(toy_db, batches, tmp_path):
    model = _model(toy_db, head_kwargs={"toy_det": {"score_threshold": 0.2}})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for t, b in batches.items():  # make every weight non-trivial
        model.loss(model(b["image"], t), b["target"], t).backward()
    opt.step()
    model.eval()
    out = model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["name"] == "resnet_small" and len(config["tasks"]) == 4
    assert [a["key"] for a in config["adapters"]] == model.adapters.keys()
    loaded = FoundationModel.from_pretrained(out).eval()
    assert loaded.heads["toy_det"].score_threshold == 0.2
    assert loaded.task_specs == model.task_specs
    with torch.no_grad():
        for t, b in batches.items():
            a, c = model(b["image"], t), loaded(b["image"], t)
            if isinstance(a, dict):
                assert all(torch.equal(a[k], c[k]) for k in ("heatmap", "regression"))
            else:
                assert torch.equal(a, c)
        # encoder-only loading gives the same features and embeddings
        trunk = load_encoder(out).eval()
        assert isinstance(trunk, EncoderWithAdapters)
        img = batches["toy_multilabel"]["image"]
        for f, g in zip(model.features(img, "microscopic"), trunk(img, "microscopic")):
            assert torch.equal(f, g)
        assert torch.equal(model.embed(img, "microscopic", multiscale=True),
                           trunk.embed(img, "microscopic", multiscale=True))
    # an encoder-only checkpoint reloads with load_encoder, not as a full model
    trunk.save_pretrained(tmp_path / "enc")
    assert load_encoder(tmp_path / "enc").adapters.keys() == trunk.adapters.keys()
    with pytest.raises(CheckpointError, match="encoder only"):
        FoundationModel.from_pretrained(tmp_path / "enc")


def test_checkpoint_errors(toy_db, tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        FoundationModel.from_pretrained(tmp_path / "missing")
    model = FoundationModel("convnext_small", tasks=[toy_db.task("toy_cls")])
    out = model.save_pretrained(tmp_path / "c")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(dict(config, format_version=99)))
    with pytest.raises(CheckpointError, match="format_version"):
        FoundationModel.from_pretrained(out)
    bad = dict(config, encoder=dict(config["encoder"], kwargs={"widths": [8, 8, 8, 8]}))
    (out / "config.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="do not match"):
        FoundationModel.from_pretrained(out)
    (out / "config.json").write_text(json.dumps(config))
    # weights of another save beside this config (an interrupted re-save) are refused
    first = (out / "model.safetensors").read_bytes()
    model.save_pretrained(out)
    FoundationModel.from_pretrained(out)
    (out / "model.safetensors").write_bytes(first)
    with pytest.raises(CheckpointError, match="save_id"):
        FoundationModel.from_pretrained(out)
    with pytest.raises(CheckpointError, match="save_id"):
        load_encoder(out)
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        FoundationModel.from_pretrained(out)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_encoder_state_plain_weights(tmp_path, suffix):
    torch.manual_seed(0)
    trunk = EncoderWithAdapters("convnext_small", adapter_channels=3)
    state = trunk.encoder.state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_encoder_state(path, "convnext_small")
    assert loaded.encoder.in_channels == 3
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for f, g in zip(trunk.encoder(x), loaded.encoder(x)):
            assert torch.equal(f, g)
        assert loaded.embed(torch.rand(2, 1, 32, 32), "x-ray").shape == (2, 256)
    with pytest.raises(CheckpointError, match="spatial_dims=3"):
        load_encoder_state(path, "convnext_small", spatial_dims=3)
    # the encoder part of a full checkpoint's weights file
    full = FoundationModel(trunk, [TaskSpec("c", "classification", ("a", "b"), "x-ray", 2, (32, 32), 1)])
    full.save_pretrained(tmp_path / "full")
    part = load_encoder_state(tmp_path / "full" / "model.safetensors", "convnext_small")
    with torch.no_grad():
        assert torch.equal(part.encoder(x)[-1], trunk.encoder(x)[-1])
    with pytest.raises(CheckpointError, match="do not match"):
        load_encoder_state(path, "resnet_small")


def test_3d_model_forward_all_kinds():
    torch.manual_seed(0)
    specs = [TaskSpec("c3", "classification", ("a", "b"), "tomographic", 3, (16, 16, 16), 1),
             TaskSpec("s3", "segmentation", ("bg", "fg"), "tomographic", 3, (16, 16, 16), 1),
             TaskSpec("d3", "detection", ("lesion",), "tomographic", 3, (16, 16, 16), 2)]
    model = FoundationModel("convnext_small", tasks=specs, spatial_dims=3, decoder_channels=16)
    x = torch.randn(2, 1, 16, 16, 16)
    assert model(x, "c3").shape == (2, 2)
    seg = model(x, "s3")
    assert seg.shape == (2, 2, 16, 16, 16)
    target = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    target[:, 4:8, 4:8, 4:8] = 1
    assert 0.5 < model.loss(seg, target, "s3").item() < 1.5
    det = model(torch.randn(2, 2, 16, 16, 16), "d3")
    boxes = [{"boxes": torch.tensor([[2.0, 2.0, 2.0, 8.0, 8.0, 8.0]]), "labels": torch.tensor([0])}] * 2
    loss = model.loss(det, boxes, "d3")
    assert 0.3 < loss.item() < 1.5
    loss.backward()
    preds = model.decode(det, "d3")
    assert preds[0]["boxes"].shape[1] == 6


def test_tiny_overfit_reduces_every_loss(toy_db, batches):
    model = _model(toy_db)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first, last = {}, {}
    for step in range(12):
        opt.zero_grad()
        for t, b in batches.items():
            loss = model.loss(model(b["image"], t), b["target"], t)
            loss.backward()
            (first if step == 0 else last)[t] = loss.item()
        opt.step()
    for t in batches:
        assert 0.6 < first[t] < 1.4, (t, first[t])  # the loss-scale convention
        assert last[t] < 0.8 * first[t], (t, first[t], last[t])


def test_transfer_from_loaded_encoder(toy_db, batches, tmp_path):
    pretrained = _model(toy_db)
    pretrained.save_pretrained(tmp_path / "pre")
    trunk = load_encoder(tmp_path / "pre")
    new = TaskSpec("new_seg", "segmentation", ("bg", "a", "b"), "other", 2, (32, 32), 3)
    model = FoundationModel.from_encoder(trunk, [new], decoder_channels=16)
    assert model.trunk is trunk and model.decoder.out_channels == 16
    # the unseen "other:3" key got its own adapter, initialised as a copy of "microscopic:3"
    a, b = model.adapters.adapters["other:3"], model.adapters.adapters["microscopic:3"]
    assert torch.equal(a.conv.weight, b.conv.weight) and a.conv.weight is not b.conv.weight
    model.set_trunk_trainable(False)
    x = torch.rand(2, 3, 32, 32)
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    model.loss(model(x, "new_seg"), target, "new_seg").backward()
    assert all(p.grad is None for p in model.trunk_parameters())
    assert all(p.grad is not None for p in model.heads["new_seg"].parameters())
    counts = model.parameter_counts()
    assert counts["encoder"] == sum(p.numel() for p in trunk.encoder.parameters())
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="already built"):
        FoundationModel(trunk, widths=(8, 8, 8, 8))


def test_grad_checkpointing_gives_same_gradients(toy_db, batches):
    b = batches["toy_seg"]
    grads = []
    for flag in (False, True):
        model = _model(toy_db)
        model.encoder.set_grad_checkpointing(flag)
        model.loss(model(b["image"], "toy_seg"), b["target"], "toy_seg").backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_active_head_and_autocast(toy_db, batches):
    model = _model(toy_db).place("cuda", active=["toy_det"])
    b = batches["toy_det"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(b["image"].cuda(), "toy_det")
        loss = model.loss(out, b["target"], "toy_det")
    loss.backward()
    assert torch.isfinite(loss) and all(p.device.type == "cpu" for p in model.heads["toy_cls"].parameters())
    assert len(model.decode(out, "toy_det")) == len(b["target"])
    model.place("cuda", active=["toy_seg"])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        seg = model(batches["toy_seg"]["image"].cuda(), "toy_seg")
        assert torch.isfinite(model.loss(seg, batches["toy_seg"]["target"].cuda(), "toy_seg"))


def test_odd_image_size_dense_outputs(toy_db):
    model = _model(toy_db).eval()
    x = torch.rand(1, 1, 30, 26)
    with torch.no_grad():
        assert model(x, "toy_seg").shape == (1, 2, 30, 26)
        pred = model.predict(x, "toy_det")[0]
    assert (pred["boxes"][:, [0, 2]] <= 26).all() and (pred["boxes"][:, [1, 3]] <= 30).all()
    assert (pred["boxes"] >= 0).all()


def test_new_adapters_follow_the_encoder_device():
    trunk = EncoderWithAdapters("resnet_small").to("meta")
    trunk.ensure_adapter("x-ray", 1)
    assert all(p.device.type == "meta" for p in trunk.adapters.parameters())
    trunk.ensure_adapter("x-ray", 3)  # created from x-ray:1, still on the encoder's device
    assert all(p.device.type == "meta" for p in trunk.adapters.adapters["x-ray:3"].parameters())


def test_same_seed_same_weights(toy_db):
    a, b = _model(toy_db), _model(toy_db)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(1)
    c = FoundationModel("resnet_small", tasks=list(toy_db.tasks.values()), decoder_channels=32)
    assert not torch.equal(c.state_dict()["trunk.encoder.stem.0.weight"], sa["trunk.encoder.stem.0.weight"])


def test_anisotropic_3d_model_round_trip(tmp_path):
    torch.manual_seed(0)
    spec = TaskSpec("d3", "detection", ("lesion",), "tomographic", 3, (8, 32, 32), 1)
    model = FoundationModel("resnet_small", tasks=[spec], spatial_dims=3, decoder_channels=16,
                            stem_strides=((1, 2, 2), (1, 2, 2)), stage_strides=(1, (1, 2, 2), 2, 2)).eval()
    assert model.decoder.reduction_per_axis == (1, 4, 4)
    assert model.heads["d3"].stride_per_axis == (1, 4, 4)
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        out = model(x, "d3")
    assert out["heatmap"].shape == (1, 1, 8, 8, 8)
    loaded = FoundationModel.from_pretrained(model.save_pretrained(tmp_path / "m")).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, "d3")["heatmap"], out["heatmap"])


def test_full_resolution_decoder(toy_db, batches, tmp_path):
    torch.manual_seed(0)
    model = FoundationModel("convnext_small", tasks=[toy_db.task("toy_seg"), toy_db.task("toy_det")],
                            decoder_channels=16, decoder_full_resolution=True)
    assert model.decoder.reduction == 1 and model.heads["toy_det"].stride_per_axis == (1, 1)
    b = batches["toy_seg"]
    out = model(b["image"], "toy_seg")
    assert out.shape == (6, 2, 32, 32)
    model.loss(out, b["target"], "toy_seg").backward()
    assert all(p.grad is not None for p in model.decoder.full.parameters())
    det = model(batches["toy_det"]["image"], "toy_det")
    assert det["heatmap"].shape == (6, 1, 32, 32)
    assert 0.5 < model.loss(det, batches["toy_det"]["target"], "toy_det").item() < 1.5
    model.eval()
    loaded = FoundationModel.from_pretrained(model.save_pretrained(tmp_path / "full")).eval()
    assert loaded.decoder.needs_skip
    with torch.no_grad():
        assert torch.equal(loaded(b["image"], "toy_seg"), model(b["image"], "toy_seg"))
    with pytest.raises(ValueError, match="skip"):
        model.decoder(model.features(b["image"], "tomographic"))


def test_one_modality_parser_names_the_bad_value():
    from medfoundry.data.tasks import Modality, parse_modality
    from medfoundry.models import adapter_key

    assert parse_modality("x-ray") is Modality.XRAY and parse_modality(Modality.OTHER) is Modality.OTHER
    with pytest.raises(ConfigError, match=r"--modality 'ct': expected one of tomographic, microscopic, x-ray"):
        parse_modality("ct", where="--modality")
    # the stems and the model use the same parser (same message)
    with pytest.raises(ConfigError, match=r"modality 'ct': expected one of"):
        adapter_key("ct", 1)
    trunk = EncoderWithAdapters("resnet_small", 2, 8)
    with pytest.raises(ConfigError, match=r"modality 'ct': expected one of"):
        trunk(torch.zeros(1, 1, 16, 16), "ct")
