"""Region parsing and decoding: nested BraTS regions give nested label maps."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.errors import ConfigError
from medfoundry.segmentation.regions import decode_regions, labels_to_region_masks, parse_regions

BRATS = "WT=1,2,3;TC=1,3;ET=3"


def test_brats_regions_write_the_brats_labels():
    regions = parse_regions("ET=3;WT=1,2,3;TC=1,3", num_classes=4)  # any order in, supersets first out
    assert [(r.name, r.writes) for r in regions] == [("WT", 2), ("TC", 1), ("ET", 3)]


def test_decoding_is_nested_and_round_trips():
    regions = parse_regions(BRATS, 4)
    rng = np.random.default_rng(0)
    label = decode_regions(rng.random((3, 12, 12, 12)), regions)  # independent, non-nested probabilities
    masks = labels_to_region_masks(label, regions).astype(bool)
    wt, tc, et = masks
    assert (et <= tc).all() and (tc <= wt).all() and et.any() and (wt & ~tc).any()
    reference = rng.integers(0, 4, (10, 10, 10)).astype(np.uint8)
    np.testing.assert_array_equal(decode_regions(labels_to_region_masks(reference, regions), regions), reference)


@pytest.mark.parametrize("text,match", [
    ("WT=1,2;TC=2,3", "overlap without one containing"),
    ("A=1,2", "would write 2 label values"),
    ("WT=1,2,9", "outside the foreground labels"),
    ("WT", "expected NAME=v"),
    ("WT=1;WT=1", "defined twice"),
])
def test_bad_regions_are_refused(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_regions(text, num_classes=4)
