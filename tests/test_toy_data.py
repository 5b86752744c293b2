"""Procedural demo data: ToyFaces determinism and splits, free-form masks, argument checking."""
import numpy as np
import pytest
import torch

from ilat_ext.data.mask_shapes import (
    MASK_MODES,
    free_form_mask,
    mask_with_mode,
    sample_mask_mode,
    validate_mode_probs,
)
from ilat_ext.data.toy import SPLITS, ToyFaces, make_face


def _items_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ items and range


@pytest.mark.parametrize("size", [32, 64, 128])
def test_item_shapes_dtypes_and_ranges(size):
    ds = ToyFaces(size=size, length=8)
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"image", "mask", "index"}
        image, mask = item["image"], item["mask"]
        assert image.shape == (size, size, 3) and image.dtype == np.float32
        assert image.min() >= -1.0 and image.max() <= 1.0
        assert image.std() > 0.1  # a picture, not a flat field
        assert mask.shape == (size, size, 1) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert item["index"] == i


def test_no_mask_entry_when_mask_false():
    assert set(ToyFaces(size=32, length=2, mask=False)[0]) == {"image", "index"}


def test_repr_names_the_settings():
    text = repr(ToyFaces(size=32, length=3, seed=5, split="test"))
    assert text.startswith("ToyFaces(") and "size=32" in text and "seed=5" in text and "'test'" in text


# ----------------------------------------------------------------------------------- determinism


def test_same_item_twice_and_across_instances():
    a, b = ToyFaces(size=64, length=16, seed=3), ToyFaces(size=64, length=16, seed=3)
    for i in (0, 7, 15):
        assert _items_equal(a[i], a[i])
        assert _items_equal(a[i], b[i])
    # Access order must not matter (no shared generator state between items).
    assert _items_equal(a[5], ToyFaces(size=64, length=16, seed=3)[5])


def test_different_indices_and_seeds_differ():
    a, b = ToyFaces(size=64, length=32, seed=0), ToyFaces(size=64, length=32, seed=1)
    images = [a[i]["image"] for i in range(32)]
    for i in range(32):
        for j in range(i + 1, 32):
            assert not np.array_equal(images[i], images[j]), (i, j)
        assert not np.array_equal(a[i]["image"], b[i]["image"])
        assert not np.array_equal(a[i]["mask"], b[i]["mask"])


def test_splits_are_disjoint():
    n = 16
    images = {split: [ToyFaces(size=32, length=n, split=split)[i]["image"] for i in range(n)] for split in SPLITS}
    for s1 in SPLITS:
        for s2 in SPLITS:
            if s1 < s2:
                for x in images[s1]:
                    assert not any(np.array_equal(x, y) for y in images[s2]), (s1, s2)


def test_face_does_not_depend_on_mask_settings():
    plain = ToyFaces(size=32, length=4, mask=False)
    masked = ToyFaces(size=32, length=4, mask_area=(0.4, 0.5), mask_modes={"partial": 0.5, "full": 0.5})
    for i in range(4):
        assert np.array_equal(plain[i]["image"], masked[i]["image"])
        assert np.array_equal(plain.face(i), ((masked[i]["image"] + 1.0) * 127.5).round().astype(np.uint8))


def test_negative_and_out_of_range_indices():
    ds = ToyFaces(size=32, length=4)
    assert _items_equal(ds[-1], ds[3])
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(IndexError):
        ds[-5]


def test_dataloader_workers_give_identical_batches():
    ds = ToyFaces(size=32, length=12, seed=2)

    def batches(num_workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, num_workers=num_workers)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for s, p in zip(serial, parallel):
        assert s.keys() == p.keys()
        for key in s:
            assert torch.equal(s[key], p[key]), key
    assert serial[0]["image"].shape == (4, 32, 32, 3)


# ------------------------------------------------------------------------------------ make_face


def test_make_face_is_deterministic_and_reports_its_layout():
    face, params = make_face(np.random.default_rng(11), 64, return_params=True)
    again = make_face(np.random.default_rng(11), 64)
    assert face.dtype == np.uint8 and face.shape == (64, 64, 3)
    assert np.array_equal(face, again)
    (lx, ly), (rx, ry) = params["eye_centers"]
    x0, y0, x1, y1 = params["mouth_box"]
    assert 0 < lx < rx < 64 and 0 < ly < 64 and 0 < ry < 64
    assert max(ly, ry) < params["nose_tip"][1] < y0 + 2  # eyes, then nose, then mouth, top to bottom
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    cx, cy = params["head_center"]
    assert lx < cx < rx


def test_faces_are_varied():
    params = [make_face(np.random.default_rng(i), 32, return_params=True)[1] for i in range(96)]
    for key in ("hair_style", "mouth_style", "nose_style", "background", "skin"):
        assert len({str(p[key]) for p in params}) >= 4, key
    assert any(p["accessories"] for p in params)


# ---------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("size", [32, 64, 128, 256])
@pytest.mark.parametrize("area_range", [(0.05, 0.3), (0.3, 0.5), (0.01, 0.05)])
def test_free_form_mask_binary_with_area_in_range(size, area_range):
    rng = np.random.default_rng(size)
    for _ in range(10):
        m = free_form_mask(size, size, rng, area_range=area_range)
        assert m.shape == (size, size) and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert area_range[0] <= m.mean() <= area_range[1]


def test_free_form_mask_non_square_and_deterministic():
    m1 = free_form_mask(48, 96, np.random.default_rng(4))
    m2 = free_form_mask(48, 96, np.random.default_rng(4))
    assert m1.shape == (48, 96) and np.array_equal(m1, m2)
    assert not np.array_equal(m1, free_form_mask(48, 96, np.random.default_rng(5)))


def test_dataset_partial_masks_respect_area():
    ds = ToyFaces(size=64, length=20, mask_area=(0.1, 0.2))
    for i in range(len(ds)):
        assert 0.1 <= ds[i]["mask"].mean() <= 0.2


def test_free_form_mask_gives_up_loudly():
    with pytest.raises(RuntimeError, match="area"):
        free_form_mask(32, 32, np.random.default_rng(0), area_range=(0.95, 1.0), max_strokes=1, max_attempts=3)


def test_mask_mode_frequencies():
    probs = {"partial": 0.5, "empty": 0.2, "full": 0.3}
    rng = np.random.default_rng(123)
    n = 1500
    counts = dict.fromkeys(MASK_MODES, 0)
    for _ in range(n):
        m = mask_with_mode(32, 32, rng, mode_probs=probs, area_range=(0.05, 0.3))
        mode = "empty" if m.max() == 0 else "full" if m.min() == 1 else "partial"
        counts[mode] += 1
        if mode == "partial":
            assert 0.05 <= m.mean() <= 0.3
    for mode, p in probs.items():
        assert abs(counts[mode] / n - p) < 0.04, counts


def test_zero_probability_modes_never_drawn():
    rng = np.random.default_rng(0)
    assert {sample_mask_mode(rng, {"partial": 0.7, "full": 0.3}) for _ in range(500)} == {"partial", "full"}
    assert {sample_mask_mode(rng, {"empty": 1.0}) for _ in range(50)} == {"empty"}


def test_dataset_mask_modes():
    full = ToyFaces(size=32, length=4, mask_modes={"full": 1.0})
    empty = ToyFaces(size=32, length=4, mask_modes={"empty": 1.0})
    for i in range(4):
        assert full[i]["mask"].min() == 1.0
        assert empty[i]["mask"].max() == 0.0


# -------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(size=40), "size"),
        (dict(size=16), "size"),
        (dict(size=512), "size"),
        (dict(size="64"), "size"),
        (dict(length=0), "length"),
        (dict(seed=-1), "seed"),
        (dict(split="val"), "split"),
        (dict(mask="yes"), "mask"),
        (dict(mask_area=(0.3, 0.1)), "area_range"),
        (dict(mask_area=(0.0, 0.2)), "area_range"),
        (dict(mask_modes={"partial": 0.5, "ful": 0.5}), "'ful'"),
        (dict(mask_modes={"partial": -0.1, "full": 1.1}), "'partial'"),
        (dict(mask_modes={"partial": 0.5, "full": 0.6}), "sum to 1"),
        (dict(mask_modes={"partial": float("nan"), "full": 1.0}), "'partial'"),
    ],
)
def test_bad_dataset_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyFaces(**kwargs)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda rng: free_form_mask(0, 32, rng), "height"),
        (lambda rng: free_form_mask(32, 32, rng, area_range=(0.2,)), "area_range"),
        (lambda rng: free_form_mask(32, 32, rng, max_strokes=0), "max_strokes"),
        (lambda rng: mask_with_mode(32, 32, rng, mode_probs={"partial": 1.0, "bogus": 0.0}), "'bogus'"),
        (lambda rng: mask_with_mode(32, 32, rng, mode_probs={"full": 1.0}, area_range=(0.5, 0.2)), "area_range"),
        (lambda rng: validate_mode_probs({"full": "lots"}), "'full'"),
        (lambda rng: make_face(rng, 8), "size"),
    ],
)
def test_bad_mask_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.random.default_rng(0))


def test_render_cache_gives_the_same_items_and_stays_bounded():
    """Items served from the render cache equal fresh renders; a face cached without its sketch is
    rendered again when the sketch is asked for; the cache never holds more than its byte bound."""
    import ilat_ext.data.toy as toy

    saved = toy._RENDERED
    try:
        toy._RENDERED = toy._RenderCache(max_bytes=3 * 64 * 64 * 3)   # three faces without sketches
        plain, sketched = ToyFaces(size=64, length=5, mask=False), ToyFaces(size=64, length=5, mask=False, sketch=True)
        first = [plain[i]["image"].copy() for i in range(5)]
        assert toy._RENDERED.bytes <= toy._RENDERED.max_bytes and len(toy._RENDERED._items) == 3
        with_sketch = [sketched[i] for i in range(5)]
        toy._RENDERED = toy._RenderCache(max_bytes=0)          # nothing cached: fresh renders
        for i in range(5):
            assert np.array_equal(plain[i]["image"], first[i])
            assert np.array_equal(with_sketch[i]["image"], first[i])
            assert np.array_equal(sketched[i]["sketch"], with_sketch[i]["sketch"])
        assert toy._RENDERED.bytes == 0
    finally:
        toy._RENDERED = saved


def test_mask_shapes_docstring_example():
    import doctest

    import ilat_ext.data.mask_shapes as mask_shapes
    failures, attempted = doctest.testmod(mask_shapes)
    assert failures == 0 and attempted > 0


def test_palettes_stay_importable_from_toy():
    """The palettes and styles moved to `toy_face_drawing` with the painting; `toy` still names them."""
    import ilat_ext.data.toy as toy
    import ilat_ext.data.toy_face_drawing as drawing
    for name in ("SKIN_TONES", "HAIR_COLOURS", "DYED_HAIR_COLOURS", "IRIS_COLOURS", "LIP_TINT", "HAIR_STYLES",
                 "HAIR_STYLE_PROBS", "MOUTH_STYLES", "NOSE_STYLES", "BACKGROUNDS"):
        assert getattr(toy, name) is getattr(drawing, name), name
