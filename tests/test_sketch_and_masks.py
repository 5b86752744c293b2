"""XDoG sketches, the edit-time condition sketch, ToyFaces sketches, mask sources and MaskedDataset."""
import os
import pickle
import warnings

import cv2
import numpy as np
import pytest

from ilat_ext.data.mask_sources import MaskedDataset, MaskSource, list_mask_files
from ilat_ext.data.sketch import (
    compose_edit_sketch,
    sketch_from_canvas,
    sketch_from_tensor_layout,
    sketch_to_tensor_layout,
    xdog,
)
from ilat_ext.data.toy import ToyFaces, _render_face, make_face
from ilat_ext.util import instantiate_from_config

# ------------------------------------------------------------------------------- XDoG reference


def _reference_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian in plain numpy: OpenCV's tap count, reflect-101 border (numpy 'reflect')."""
    n = int(np.rint(8 * sigma + 1)) | 1
    t = np.arange(n) - (n - 1) / 2
    g = np.exp(-t * t / (2 * sigma * sigma))
    g /= g.sum()
    r = n // 2
    p = np.pad(x, r, mode="reflect")
    rows = sum(g[i] * p[i:i + x.shape[0], :] for i in range(n))
    return sum(g[i] * rows[:, i:i + x.shape[1]] for i in range(n))


def _reference_xdog(rgb: np.ndarray, gamma=0.97, phi=200.0, eps=0.1, k=2.5, sigma=1.5) -> np.ndarray:
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # grey levels [0, 255]
    d = _reference_blur(gray, sigma) - gamma * _reference_blur(gray, k * sigma)
    return np.rint(np.clip(1 + np.tanh(phi * (d - eps)), 0, 1) * 255).astype(np.uint8)


def _synthetic_rgb(h=48, w=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 3.0, yy * 4.0, np.full((h, w), 120.0)], -1)  # smooth gradients
    img[(yy - 20) ** 2 + (xx - 40) ** 2 < 100] = (30, 40, 200)  # disc
    img[8:30, 5:22] = (220, 210, 60)  # rectangle
    img[35:40, :] = (10, 10, 10)  # dark bar across
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def test_xdog_matches_numpy_reference():
    img = _synthetic_rgb()
    ours, ref = xdog(img).astype(int), _reference_xdog(img).astype(int)
    assert ours.shape == (48, 64)
    assert np.abs(ours - ref).max() <= 1
    # Non-default constants go through the same formula.
    kw = dict(gamma=0.99, phi=20.0, eps=0.5, k=1.6, sigma=0.8)
    assert np.abs(xdog(img, **kw).astype(int) - _reference_xdog(img, **kw).astype(int)).max() <= 1


def test_xdog_input_conventions_agree():
    img = _synthetic_rgb(seed=1)
    ref = xdog(img)
    assert np.array_equal(xdog(img[:, :, ::-1].copy(), channel_order="bgr"), ref)
    assert np.abs(xdog(img.astype(np.float32) / 255.0).astype(int) - ref).max() <= 1
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(xdog(gray), xdog(gray[:, :, None]))


def test_xdog_draws_dark_lines_on_white():
    img = np.full((64, 64), 200, np.uint8)
    img[16:48, 16:48] = 40  # dark square on grey
    e = xdog(img)
    assert set(np.unique(e)) <= {0, 255}  # phi=200 per grey level: binary in practice
    assert e[0, 0] == 255 and e[32, 32] == 255  # flat regions are paper
    assert e[32, 16] == 0 and e[32, 15] == 255  # ink on the dark side of the edge only
    assert 0.6 < (e == 255).mean() < 0.99
    # On [0, 1] intensities the same constants give the inverted, sparse picture (documented).
    inverted = xdog(img, intensity_scale=1.0)
    assert inverted[0, 0] == 0 and inverted[32, 32] == 0 and (inverted == 0).mean() > 0.8


def test_xdog_on_toy_face_is_mostly_paper():
    e = xdog(make_face(np.random.default_rng(0), 256))
    assert 0.7 < (e == 255).mean() < 0.98


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((8, 8), np.int32), TypeError, "dtype int32"),
        (np.zeros((8, 8, 4), np.uint8), ValueError, r"\(8, 8, 4\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), ValueError, "shape"),
        (np.full((8, 8, 3), -0.5, np.float32), ValueError, r"\[-1, 1\]"),
        (np.full((8, 8), 2.0), ValueError, r"\[0, 1\]"),
        ([[0, 1]], TypeError, "numpy array"),
    ],
)
def test_xdog_rejects_bad_images(image, error, match):
    with pytest.raises(error, match=match):
        xdog(image)


def test_xdog_rejects_bad_settings():
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="channel_order"):
        xdog(np.zeros((8, 8, 3), np.uint8), channel_order="rbg")
    with pytest.raises(ValueError, match="sigma"):
        xdog(img, sigma=0)


def test_tensor_layout_round_trip():
    s = np.array([[0, 255], [128, 255]], np.uint8)
    t = sketch_to_tensor_layout(s)
    assert t.shape == (2, 2, 1) and t.dtype == np.float32
    assert t[0, 0, 0] == -1.0 and t[0, 1, 0] == 1.0
    assert np.array_equal(sketch_from_tensor_layout(t), s)


# --------------------------------------------------------------------------- compose_edit_sketch


def test_compose_edit_sketch_strokes_inside_xdog_outside():
    face = make_face(np.random.default_rng(2), 64)
    mask = np.zeros((64, 64), np.float32)
    mask[20:44, 16:48] = 1
    strokes = np.full((64, 64), 255, np.uint8)
    cv2.line(strokes, (0, 32), (63, 32), 0, 2)  # crosses the mask border
    out = compose_edit_sketch(face, mask[:, :, None], strokes)
    inside = mask.astype(bool)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert np.array_equal(out[inside], strokes[inside])
    assert np.array_equal(out[~inside], xdog(face)[~inside])
    # A precomputed sketch of the original (e.g. ToyFaces') is used as given.
    ds = ToyFaces(size=64, length=2, mask=False)
    original = ds.sketch_of(1)
    out = compose_edit_sketch(ds.face(1), mask > 0.5, strokes, original_sketch=original)
    assert np.array_equal(out[~inside], original[~inside]) and np.array_equal(out[inside], strokes[inside])


@pytest.mark.parametrize(
    "mask_shape, strokes_shape, match",
    [
        ((32, 32), (64, 64), r"mask \(32, 32\)"),
        ((64, 64), (64, 48), r"strokes \(64, 48\)"),
        ((64, 64, 2), (64, 64), r"mask must have shape .* got \(64, 64, 2\)"),
    ],
)
def test_compose_edit_sketch_bad_sizes_name_shapes(mask_shape, strokes_shape, match):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=match) as info:
        compose_edit_sketch(image, np.zeros(mask_shape, np.float32), np.full(strokes_shape, 255, np.uint8))
    if len(mask_shape) == 2:
        assert "image (64, 64, 3)" in str(info.value)


def test_compose_edit_sketch_bad_values():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="mask > 127"):
        compose_edit_sketch(image, np.full((8, 8), 255, np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="strokes must be uint8"):
        compose_edit_sketch(image, np.zeros((8, 8)), np.zeros((8, 8), np.float32))


# ---------------------------------------------------------------------------- ToyFaces sketches


def test_toy_sketch_items_range_and_determinism():
    a, b = ToyFaces(size=64, length=6, seed=4, sketch=True), ToyFaces(size=64, length=6, seed=4, sketch=True)
    plain = ToyFaces(size=64, length=6, seed=4)
    for i in (0, 3, 5):
        item = a[i]
        assert set(item) == {"image", "mask", "sketch", "index"}
        s = item["sketch"]
        assert s.shape == (64, 64, 1) and s.dtype == np.float32
        assert s.min() >= -1.0 and s.max() <= 1.0
        assert (s == 1.0).mean() > 0.6 and s.min() < -0.5  # mostly paper, with ink
        assert np.array_equal(s, a[i]["sketch"]) and np.array_equal(s, b[i]["sketch"])
        # Sketches leave faces and masks alone.
        assert np.array_equal(item["image"], plain[i]["image"]) and np.array_equal(item["mask"], plain[i]["mask"])
        # Same library function on the same face.
        _, canvas, _ = _render_face(a._rng(i, 0), 64)
        assert np.array_equal(s, sketch_to_tensor_layout(sketch_from_canvas(canvas, 64)))
        assert np.array_equal(sketch_from_tensor_layout(s), a.sketch_of(i))
    assert not np.array_equal(a[0]["sketch"], a[3]["sketch"])


@pytest.mark.parametrize("size", [32, 128])
def test_toy_sketch_other_sizes(size):
    s = ToyFaces(size=size, length=1, mask=False, sketch=True)[0]["sketch"]
    assert s.shape == (size, size, 1) and (s == 1.0).mean() > 0.5


def test_toy_sketch_flag_checked():
    with pytest.raises(ValueError, match="sketch"):
        ToyFaces(sketch="yes")


# ---------------------------------------------------------------------------------- mask files

# Grey levels 100 / 200 so that binarisation (> 127) is exercised; 64 x 64 files, asymmetric shapes.
def _write_masks(folder):
    os.makedirs(folder, exist_ok=True)
    patterns = {}
    for name, (y0, y1, x0, x1) in {"a.png": (0, 64, 0, 20), "b.png": (0, 16, 0, 64), "c.png": (8, 24, 30, 60)}.items():
        img = np.full((64, 64), 100, np.uint8)
        img[y0:y1, x0:x1] = 200
        cv2.imwrite(os.path.join(folder, name), img)
        patterns[name] = img
    return patterns


def _variants(img, h, w):
    m = (cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST) > 127).astype(np.float32)
    return [m, m[:, ::-1], m[::-1, :], m[::-1, ::-1]]


def _is_variant(mask, img, h, w):
    return any(np.array_equal(mask, v) for v in _variants(img, h, w))


def test_mask_source_from_folder_with_a_corrupt_file(tmp_path):
    patterns = _write_masks(tmp_path / "masks")
    (tmp_path / "masks" / "zz_corrupt.png").write_bytes(b"not a png at all")
    (tmp_path / "masks" / "notes.txt").write_text("ignored: not an image extension")
    src = MaskSource(mode_probs={"partial": 1.0}, mask_files=tmp_path / "masks", file_ratio=1.0, seed=1)
    assert len(src.paths) == 4 and all(p.endswith(".png") for p in src.paths)
    seen = set()
    with pytest.warns(RuntimeWarning, match=r"zz_corrupt.png.*1 of 4"):
        for i in range(40):
            mask, origin = src.draw(src.rng(i), 32, 48)
            assert mask.shape == (32, 48) and mask.dtype == np.float32
            name = os.path.basename(origin)
            assert name in patterns, origin
            assert _is_variant(mask, patterns[name], 32, 48)
            seen.add(name)
    assert seen == set(patterns)
    assert src.skipped == 1 and src.unreadable == [str(tmp_path / "masks" / "zz_corrupt.png")]
    # The cache of unreadable files does not change the masks: a fresh source agrees.
    fresh = MaskSource(mode_probs={"partial": 1.0}, mask_files=tmp_path / "masks", file_ratio=1.0, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in (39, 7, 0):
            assert np.array_equal(fresh.sample(i, 32, 48), src.sample(i, 32, 48))


def test_mask_source_from_flist(tmp_path):
    _write_masks(tmp_path / "data" / "masks")
    lists = tmp_path / "lists"
    lists.mkdir()
    flist = lists / "train.flist"
    flist.write_text(
        "# irregular masks\n"
        "../data/masks/a.png\n"
        "\n"
        f"{tmp_path / 'data' / 'masks' / 'b.png'}\n"  # absolute
        "../data/masks/missing.png  \n"
    )
    paths = list_mask_files(mask_list=flist)
    assert [os.path.basename(p) for p in paths] == ["a.png", "b.png", "missing.png"]
    assert os.path.isfile(paths[0]) and os.path.isabs(paths[0])
    src = MaskSource(mode_probs={"partial": 1.0}, mask_list=str(flist), file_ratio=1.0)
    with pytest.warns(RuntimeWarning, match="missing.png"):
        origins = [src.draw(src.rng(i), 64, 64)[1] for i in range(30)]
    assert {os.path.basename(o) for o in origins} == {"a.png", "b.png"}
    assert src.skipped == 1
    # Folder and list together: their union.
    both = MaskSource(mask_files=tmp_path / "data" / "masks", mask_list=flist)
    assert len(both.paths) == 3 + 3


def test_all_files_unreadable_falls_back_to_free_form(tmp_path):
    flist = tmp_path / "bad.flist"
    flist.write_text("nope1.png\nnope2.png\n")
    src = MaskSource(mode_probs={"partial": 1.0}, mask_list=flist, file_ratio=1.0, free_form_area=(0.1, 0.2))
    with pytest.warns(RuntimeWarning):
        mask, origin = src.draw(src.rng(0), 32, 32)
    assert origin == "free_form" and 0.1 <= mask.mean() <= 0.2
    assert src.skipped == 2


def test_empty_or_missing_mask_folder_and_list_raise_naming_the_path(tmp_path):
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty_masks"):
        MaskSource(mask_files=empty)
    blank = tmp_path / "blank.flist"
    blank.write_text("\n# only a comment\n  \n")
    with pytest.raises(ValueError, match="blank.flist"):
        MaskSource(mask_list=blank)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        MaskSource(mask_files=tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="no_such.flist"):
        MaskSource(mask_list=tmp_path / "no_such.flist")


# --------------------------------------------------------------------------------- mask modes


def test_mask_source_defaults_are_the_release_mix():
    src = MaskSource()
    assert src.mode_probs == {"partial": 0.7, "empty": 0.0, "full": 0.3}
    assert src.paths == [] and src.file_ratio == 0.5


def test_mask_source_mode_frequencies():
    probs = {"partial": 0.5, "empty": 0.2, "full": 0.3}
    src = MaskSource(free_form_area=(0.05, 0.3), mode_probs=probs, seed=9)
    n = 800
    counts = dict.fromkeys(probs, 0)
    for i in range(n):
        m = src.sample(i, 16, 16)
        mode = "empty" if m.max() == 0 else "full" if m.min() == 1 else "partial"
        counts[mode] += 1
        if mode == "partial":
            assert 0.05 <= m.mean() <= 0.3
    for mode, p in probs.items():
        assert abs(counts[mode] / n - p) < 0.05, counts


def test_file_ratio(tmp_path):
    _write_masks(tmp_path)
    src = MaskSource(mode_probs={"partial": 1.0}, mask_files=tmp_path, file_ratio=0.3)
    n = 400
    from_files = sum(src.draw(src.rng(i), 16, 16)[1] != "free_form" for i in range(n))
    assert abs(from_files / n - 0.3) < 0.07
    never = MaskSource(mode_probs={"partial": 1.0}, mask_files=tmp_path, file_ratio=0.0)
    assert all(never.draw(never.rng(i), 16, 16)[1] == "free_form" for i in range(50))


def test_mask_source_determinism_and_streams():
    a, b = MaskSource(seed=5), MaskSource(seed=5)
    for i in (0, 11, 3):
        assert np.array_equal(a.sample(i, 32, 32), b.sample(i, 32, 32))
    partial = MaskSource(mode_probs={"partial": 1.0}, seed=5)
    assert not np.array_equal(partial.sample(0, 32, 32), partial.sample(1, 32, 32))
    assert not np.array_equal(partial.sample(0, 32, 32), partial.sample(0, 32, 32, stream=1))
    other_seed = MaskSource(mode_probs={"partial": 1.0}, seed=6)
    assert not np.array_equal(partial.sample(0, 32, 32), other_seed.sample(0, 32, 32))


def test_box_masks_are_one_rectangle_in_the_area_range():
    from ilat_ext.data.mask_shapes import box_mask
    rng = np.random.default_rng(0)
    tops, shapes = set(), set()
    for _ in range(200):
        m = box_mask(48, 64, rng, area_range=(0.05, 0.3), aspect_range=(0.5, 2.0))
        rows, cols = np.nonzero(m)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert m.dtype == np.float32 and set(np.unique(m)) == {0.0, 1.0}
        assert m[top:bottom, left:right].all() and m.sum() == (bottom - top) * (right - left)   # one filled box
        assert 0.05 <= m.mean() <= 0.3
        assert 0.5 / 1.2 <= (right - left) / (bottom - top) <= 2.0 * 1.2 or right - left == 64 or bottom - top == 48
        tops.add(int(top))
        shapes.add((int(bottom - top), int(right - left)))
    assert len(tops) > 20 and len(shapes) > 50                       # placed and shaped at random
    with pytest.raises(RuntimeError, match="no 4 x 4 box"):
        box_mask(4, 4, rng, area_range=(0.3, 0.31))
    with pytest.raises(ValueError, match="aspect_range"):
        box_mask(8, 8, rng, aspect_range=(2.0, 1.0))


def test_box_ratio_mixes_boxes_into_the_generated_partial_masks():
    plain = MaskSource(mode_probs={"partial": 0.7, "full": 0.3}, seed=4)
    zero = MaskSource(mode_probs={"partial": 0.7, "full": 0.3}, seed=4, box_ratio=0.0)
    assert all(np.array_equal(plain.sample(i, 32, 32), zero.sample(i, 32, 32)) for i in range(30))
    src = MaskSource(mode_probs={"partial": 0.7, "full": 0.3}, seed=4, box_ratio=0.4)
    kinds = [src.draw(src.rng(i), 32, 32)[1] for i in range(600)]
    partial = [k for k in kinds if k != "full"]
    assert set(partial) == {"box", "free_form"}
    assert abs(partial.count("box") / len(partial) - 0.4) < 0.07
    assert abs(kinds.count("full") / len(kinds) - 0.3) < 0.06
    for i, kind in enumerate(kinds[:60]):
        if kind == "box":
            m = src.sample(i, 32, 32)
            rows, cols = np.nonzero(m)
            assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all() and 0.05 <= m.mean() <= 0.3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(box_ratio=-0.1), "box_ratio"),
        (dict(box_ratio="half"), "box_ratio"),
        (dict(file_ratio=1.5), "file_ratio"),
        (dict(seed=-1), "seed"),
        (dict(mode_probs={"partial": 0.5, "ful": 0.5}), "'ful'"),
        (dict(free_form_area=(0.3, 0.1)), "area_range"),
    ],
)
def test_mask_source_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskSource(**kwargs)


# ------------------------------------------------------------------------------- MaskedDataset


def test_masked_dataset_adds_deterministic_masks():
    inner = ToyFaces(size=32, length=6, mask=False)
    src = MaskSource(mode_probs={"partial": 0.7, "full": 0.3}, seed=2)
    ds = MaskedDataset(inner, src, seed=1)
    assert len(ds) == 6
    later = [ds[i] for i in (5, 2, 0)]
    again = MaskedDataset(
        ToyFaces(size=32, length=6, mask=False), MaskSource(mode_probs={"partial": 0.7, "full": 0.3}, seed=2), seed=1
    )
    for i, item in zip((5, 2, 0), later):
        assert set(item) == {"image", "index", "mask"}
        assert item["mask"].shape == (32, 32, 1) and item["mask"].dtype == np.float32
        assert set(np.unique(item["mask"])) <= {0.0, 1.0}
        assert np.array_equal(item["image"], inner[i]["image"])
        assert np.array_equal(item["mask"], ds[i]["mask"]) and np.array_equal(item["mask"], again[i]["mask"])
        assert np.array_equal(item["mask"][:, :, 0], src.sample(i, 32, 32, stream=1))
    other_seed = MaskedDataset(inner, src, seed=2)
    assert any(not np.array_equal(ds[i]["mask"], other_seed[i]["mask"]) for i in range(6))
    # What DataLoader workers get under spawn: a pickled copy draws the same masks.
    copy = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(copy[4]["mask"], ds[4]["mask"])


def test_masked_dataset_from_yaml_style_config(tmp_path):
    _write_masks(tmp_path / "m")
    config = {
        "target": "ilat_ext.data.mask_sources.MaskedDataset",
        "params": {
            "dataset": {"target": "ilat_ext.data.toy.ToyFaces", "params": {"size": 32, "length": 4, "mask": False}},
            "mask_source": {"free_form_area": [0.1, 0.2], "mode_probs": {"partial": 1.0},
                            "mask_files": str(tmp_path / "m"), "file_ratio": 0.5, "seed": 3},
            "seed": 0,
        },
    }
    ds = instantiate_from_config(config)
    assert isinstance(ds, MaskedDataset) and isinstance(ds.dataset, ToyFaces)
    assert ds.mask_source.free_form_area == (0.1, 0.2) and len(ds.mask_source.paths) == 3
    assert ds[3]["mask"].shape == (32, 32, 1)
    # mask_source as a target/params config too.
    config["params"]["mask_source"] = {"target": "ilat_ext.data.mask_sources.MaskSource", "params": {"seed": 3}}
    assert instantiate_from_config(config).mask_source.seed == 3


def test_mask_sources_docstring_example():
    import doctest

    import ilat_ext.data.mask_sources as mask_sources
    failures, attempted = doctest.testmod(mask_sources)
    assert failures == 0 and attempted > 0


def test_masked_dataset_errors():
    with pytest.raises(KeyError, match="already has 'mask'"):
        MaskedDataset(ToyFaces(size=32, length=2), MaskSource())[0]
    with pytest.raises(KeyError, match="'img'"):
        MaskedDataset(ToyFaces(size=32, length=2, mask=False), MaskSource(), image_key="img")[0]
    with pytest.raises(TypeError, match="mask_source"):
        MaskedDataset(ToyFaces(size=32, length=2, mask=False), 42)
    with pytest.raises(TypeError, match="unexpected keyword"):
        MaskedDataset(ToyFaces(size=32, length=2, mask=False), {"free_form_areas": (0.1, 0.2)})
    with pytest.raises(IndexError):
        MaskedDataset(ToyFaces(size=32, length=2, mask=False), MaskSource())[2]
