"""medfoundry.inference: one path for predictions and embeddings, and its predictor seam."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.inference import compose, embed, features, predict, predict_task, run_batches
from medfoundry.training import PretrainConfig, evaluate
from medfoundry.training.pretrain import build_model


@pytest.fixture(scope="module")
def model(toy_db):
    torch.manual_seed(0)
    m = build_model([toy_db.task(t) for t in toy_db.tasks], PretrainConfig(decoder_channels=16))
    return m.eval()


def _images(db, task, n):
    return np.stack([db.image(task, i) for i in range(n)])


def test_predict_same_whatever_the_input_form_and_batch(model, toy_db):
    images = _images(toy_db, "toy_cls", 5)
    whole = predict(model, "toy_cls", images, batch_size=5)
    assert len(whole) == 5 and whole[0].shape == (toy_db.task("toy_cls").num_classes,)
    for other in (predict(model, "toy_cls", torch.from_numpy(images), batch_size=2),
                  predict(model, "toy_cls", list(images), batch_size=3)):
        np.testing.assert_allclose(np.stack(other), np.stack(whole), atol=1e-5)
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(images), "toy_cls"), 1).numpy()
    np.testing.assert_allclose(np.stack(whole), direct, atol=1e-5)


def test_predict_reads_image_files(model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_file = predict(model, "toy_cls", [tmp_path / "a.png"])
    from_array = predict(model, "toy_cls", (pixels / 255.0)[None, None].astype(np.float32))
    np.testing.assert_allclose(from_file[0], from_array[0], atol=1e-5)


def test_predict_task_and_trainer_share_the_predictor_seam(model, toy_db):
    out = predict_task(model, toy_db, "toy_seg", "val", max_samples=3, batch_size=2)
    assert len(out.preds) == len(out.targets) == 3
    assert np.array_equal(out.indices, toy_db.split_indices("toy_seg", "val")[:3])
    assert out.preds[0].shape == tuple(toy_db.task("toy_seg").image_size)

    calls = []

    def background_only(inner):
        def run(model, task, image):
            calls.append(task)
            logits = inner(model, task, image)
            logits = torch.zeros_like(logits)
            logits[:, 0] = 1.0  # every pixel background: no foreground Dice at all
            return logits
        return run

    metrics = evaluate(model, toy_db, "val", tasks=["toy_seg"], predictor=compose(background_only))
    assert calls and set(calls) == {"toy_seg"}
    assert metrics["toy_seg"]["dice"] == 0.0


def test_embed_and_features_match_the_model(model, toy_db):
    images = _images(toy_db, "toy_cls", 4)
    spec = toy_db.task("toy_cls")
    emb = embed(model, images, spec.modality, batch_size=3)
    with torch.no_grad():
        direct = model.embed(torch.from_numpy(images), spec.modality)
    assert emb.shape == (4, model.trunk.embed_dim)
    np.testing.assert_allclose(emb.numpy(), direct.numpy(), atol=1e-5)
    maps = features(model, images, spec.modality, batch_size=3)
    assert [m.shape[0] for m in maps] == [4] * len(maps) and maps[0].shape[-1] > maps[-1].shape[-1]
    # images of different sizes go in separate batches instead of failing to stack
    mixed = embed(model, [images[0], images[1][:, :16, :16], images[2]], spec.modality, batch_size=8)
    assert mixed.shape == (3, model.trunk.embed_dim)


def test_run_batches_sees_every_item_once():
    seen = []
    preds = run_batches(lambda chunk: np.asarray(chunk) * 2, np.arange(7), 3, list, lambda c, o: seen.append(len(c)))
    assert preds == [0, 2, 4, 6, 8, 10, 12] and seen == [3, 3, 1]
