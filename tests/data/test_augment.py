"""Augmentation: targets follow the image exactly, masks stay label-valued, seeded, ``none`` is identity."""

from types import SimpleNamespace

import numpy as np
import pytest

from medfoundry.data.augment import Augmenter, AugmentPolicy, make_augmenter, policy_for
from medfoundry.errors import ConfigError


def _spec(kind: str, modality: str = "microscopic", dims: int = 2) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, modality=modality, spatial_dims=dims)


def _scene(rng: np.random.Generator, shape=(24, 24)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image, a label mask with two rectangles and their tight pixel-edge boxes."""
    mask = np.zeros(shape, np.int64)
    boxes = []
    for label, (r, c, h, w) in enumerate([(2, 3, 5, 7), (12, 14, 6, 4)], start=1):
        mask[r:r + h, c:c + w] = label
        boxes.append([c, r, c + w, r + h])
    image = (mask[None] * 0.4 + rng.normal(0, 0.01, (1, *shape))).astype(np.float32)
    return image, mask, np.asarray(boxes, np.float32)


def _boxes_of(mask: np.ndarray) -> np.ndarray:
    out = []
    for label in (1, 2):
        rows, cols = np.nonzero(mask == label)
        out.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("flip_axes,rot90", [((0,), False), ((1,), False), ((), True), ((0, 1), True)])
def test_boxes_follow_flip_and_rot90_exactly(flip_axes, rot90):
    rng = np.random.default_rng(0)
    image, mask, boxes = _scene(rng)
    policy = AugmentPolicy(flip_axes=flip_axes, rot90=rot90)
    seg, det = Augmenter(_spec("segmentation"), policy), Augmenter(_spec("detection"), policy)
    changed = 0
    for s in range(12):
        img_s, mask_t = seg(image, mask, np.random.default_rng(s))
        img_d, box_t = det(image, {"boxes": boxes, "labels": np.array([0, 1])}, np.random.default_rng(s))
        np.testing.assert_array_equal(img_s, img_d)  # same seed: same geometry for both kinds
        np.testing.assert_array_equal(box_t["boxes"], _boxes_of(mask_t))
        np.testing.assert_array_equal(box_t["labels"], [0, 1])
        changed += not np.array_equal(mask_t, mask)
    assert changed > 0


def test_affine_boxes_cover_the_moved_object_and_masks_stay_label_valued():
    rng = np.random.default_rng(1)
    image, mask, boxes = _scene(rng)
    policy = AugmentPolicy(affine_prob=1.0, rotate=np.deg2rad(10), zoom=0.1, translate=0.05)
    seg, det = Augmenter(_spec("segmentation"), policy), Augmenter(_spec("detection"), policy)
    for s in range(8):
        _, mask_t = seg(image, mask, np.random.default_rng(s))
        _, box_t = det(image, {"boxes": boxes, "labels": np.array([0, 1])}, np.random.default_rng(s))
        assert set(np.unique(mask_t)) <= {0, 1, 2} and mask_t.dtype == mask.dtype
        tight = _boxes_of(mask_t)
        # the box of the transformed corners contains the moved object and is not much larger
        assert np.all(box_t["boxes"][:, :2] <= tight[:, :2] + 1) and np.all(box_t["boxes"][:, 2:] >= tight[:, 2:] - 1)
        assert np.all(box_t["boxes"][:, 2:] - box_t["boxes"][:, :2] <= (tight[:, 2:] - tight[:, :2]) * 1.6 + 2)


def test_boxes_pushed_out_of_the_image_are_dropped_with_their_labels():
    image = np.zeros((1, 16, 16), np.float32)
    boxes = np.array([[0, 0, 2, 2], [6, 6, 10, 10]], np.float32)
    policy = AugmentPolicy(affine_prob=1.0, translate=0.5)
    det = Augmenter(_spec("detection"), policy)
    dropped = 0
    for s in range(20):
        _, t = det(image, {"boxes": boxes, "labels": np.array([3, 4])}, np.random.default_rng(s))
        assert len(t["boxes"]) == len(t["labels"])
        assert np.all(t["boxes"] >= 0) and np.all(t["boxes"] <= 16)
        assert np.all(t["boxes"][:, 2:] - t["boxes"][:, :2] >= 1)
        dropped += len(t["boxes"]) < 2
    assert dropped > 0


def test_same_seed_same_sample_and_different_seeds_differ():
    rng = np.random.default_rng(2)
    image, mask, _ = _scene(rng)
    aug = make_augmenter(_spec("segmentation"), "standard")
    a = aug(image, mask, np.random.default_rng([7, 3]))
    b = aug(image, mask, np.random.default_rng([7, 3]))
    c = aug(image, mask, np.random.default_rng([7, 4]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and a[0].shape == image.shape


def test_none_is_identity_and_bad_level_is_one_line_error():
    assert make_augmenter(_spec("classification"), "none") is None
    assert policy_for(_spec("classification"), "none").identity
    with pytest.raises(ConfigError, match="augment: expected one of none, light, standard"):
        policy_for(_spec("classification"), "heavy")


def test_modality_rules():
    xray = policy_for(_spec("classification", "x-ray"), "standard")
    assert xray.flip_axes == () and not xray.rot90
    mri = policy_for(_spec("segmentation", "tomographic"), "standard")
    assert mri.flip_axes == (1,) and not mri.rot90
    micro = policy_for(_spec("detection", "microscopic"), "standard")
    assert micro.flip_axes == (0, 1) and micro.rot90
    # a kind whose target the augmenter cannot move gets intensity changes only
    other = policy_for(_spec("segmentation3d", "microscopic", 3), "standard")
    assert other.flip_axes == () and not other.rot90 and other.affine_prob == 0


def test_batch_stream_augmentation_is_seeded_per_draw_and_resumes_exactly(toy_db):
    from medfoundry.data.loading import BatchStream, TaskDataset

    ds = TaskDataset(toy_db, "toy_det", augment="standard")
    a, b = BatchStream(ds, 8, seed=3), BatchStream(ds, 8, seed=3)
    first = a.next_batch()
    np.testing.assert_array_equal(first["image"].numpy(), b.next_batch()["image"].numpy())
    state = a.state_dict()
    following = [a.next_batch() for _ in range(4)]  # crosses into the next epoch (24 samples)
    resumed = BatchStream(ds, 8, seed=0)
    resumed.load_state_dict(state)
    for want in following:
        got = resumed.next_batch()
        np.testing.assert_array_equal(got["image"].numpy(), want["image"].numpy())
        for g, w in zip(got["target"], want["target"]):
            np.testing.assert_array_equal(g["boxes"].numpy(), w["boxes"].numpy())
    # a sample drawn again in a later epoch is augmented differently
    plain = TaskDataset(toy_db, "toy_det")
    idx = int(first["index"][0])
    row = int(np.nonzero(ds.indices == idx)[0][0])
    views = {ds.sample(row, (3, e, 0, 1)).get("image").tobytes() for e in range(4)}
    assert len(views) > 1 and plain.transform is None
