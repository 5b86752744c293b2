"""Face data: XDoG over a folder (resume, atomic writes, bad files), mask files and mask sets,
FaceDataset (image folder / flist / taming .npy, sketches, joint flip, skips) and the FFHQ configs."""
import doctest
import importlib.util
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import ilat_ext.data.image_files as image_files
from ilat_ext.data import FaceDataset
from ilat_ext.data.faces import load_npy_image, write_split_flists
from ilat_ext.data.folder import read_flist, read_rgb
from ilat_ext.data.image_files import TEMP_PREFIX
from ilat_ext.data.mask_sources import MaskSource, write_free_form_masks
from ilat_ext.data.sketch import release_sketch, sketch_folder
from ilat_ext.util import instantiate_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _photo(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    """uint8 (h, w, 3) RGB with shapes that give XDoG lines; left-right asymmetric."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(150, 230, 3), np.uint8)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, min(h, w), 2))
        cv2.circle(img, (x, y), int(rng.integers(4, 14)), tuple(int(c) for c in rng.integers(0, 120, 3)), -1)
    cv2.rectangle(img, (2, 2), (w // 4, h - 3), (20, 20, 20), -1)  # a dark bar on the left only
    return img


def _write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _image_tree(root):
    """Nested folder: 3 good images (one a non-square jpg), a corrupt png and a text file."""
    _write(root / "a.png", _photo(0))
    _write(root / "sub" / "b.png", _photo(1, 80, 64))
    _write(root / "sub" / "deeper" / "c.png", _photo(2))
    (root / "sub" / "corrupt.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image")
    return [root / "a.png", root / "sub" / "b.png", root / "sub" / "deeper" / "c.png"]


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- sketch_folder


def test_sketch_folder_nested_bad_files_resume(tmp_path):
    good = _image_tree(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match=r"skipped 2 of 5 files .*1 unreadable images, 1 not images"):
        report = sketch_folder(tmp_path / "in", out, size=32, progress=False)
    assert report.written == 3 and report.already_done == 0
    assert report.unreadable == [str(tmp_path / "in" / "sub" / "corrupt.png")]
    assert report.not_images == [str(tmp_path / "in" / "notes.txt")]
    assert _files(out) == ["a.png", os.path.join("sub", "b.png"), os.path.join("sub", "deeper", "c.png")]
    for src in good:
        written = cv2.imread(str(out / os.path.relpath(src, tmp_path / "in")), cv2.IMREAD_UNCHANGED)
        assert written.shape == (32, 32) and written.dtype == np.uint8
        assert np.array_equal(written, release_sketch(read_rgb(str(src)), 32))
    assert 0 < (written < 128).mean() < 0.5  # dark lines on white, not blank

    with pytest.warns(RuntimeWarning):
        again = sketch_folder(tmp_path / "in", out, size=32, progress=False)
    assert (again.written, again.already_done) == (0, 3)

    os.remove(out / "sub" / "b.png")
    (out / "a.png").write_bytes(b"truncated")  # a broken output is not "done"
    with pytest.warns(RuntimeWarning):
        third = sketch_folder(tmp_path / "in", out, size=32, progress=False)
    assert (third.written, third.already_done) == (2, 1)
    assert np.array_equal(cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED), release_sketch(_photo(0), 32))
    with pytest.warns(RuntimeWarning):
        assert sketch_folder(tmp_path / "in", out, size=32, overwrite=True, progress=False).written == 3


def test_sketch_folder_interrupted_leaves_only_complete_files(tmp_path, monkeypatch):
    _image_tree(tmp_path / "in")
    out = tmp_path / "out"
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # killed between writing the temp file and renaming it
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sketch_folder(tmp_path / "in", out, size=32, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _files(out) == ["a.png"]  # the second file never appeared, no temp file left behind
    assert not any(os.path.basename(f).startswith(TEMP_PREFIX) for f in _files(out))
    with pytest.warns(RuntimeWarning):
        resumed = sketch_folder(tmp_path / "in", out, size=32, progress=False)
    assert (resumed.written, resumed.already_done) == (2, 1)
    assert not any(os.path.basename(f).startswith(TEMP_PREFIX) for f in _files(out))


def test_sketch_folder_refuses_clashes_and_in_place(tmp_path):
    _write(tmp_path / "in" / "x.png", _photo(0))
    _write(tmp_path / "in" / "x.jpg", _photo(1))
    with pytest.raises(ValueError, match=r"1 images share an output png.*x\.(jpg|png) and .*x\.(jpg|png)"):
        sketch_folder(tmp_path / "in", tmp_path / "out", size=32, progress=False)
    os.remove(tmp_path / "in" / "x.jpg")
    with pytest.raises(ValueError, match="overwrite 1 input"):
        sketch_folder(tmp_path / "in", tmp_path / "in", size=32, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images .* in input folder .*empty.* 1 other files"):
        sketch_folder(tmp_path / "empty", tmp_path / "out", progress=False)


def test_generate_xdog_sketch_script(tmp_path):
    _image_tree(tmp_path / "in")
    script = os.path.join("scripts", "generate_xdog_sketch.py")
    run = subprocess.run([sys.executable, script, "--input_path", str(tmp_path / "in"), "--output_path",
                          str(tmp_path / "out"), "--size", "32"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert "written 3, resumed 0, skipped 2" in run.stdout and "corrupt.png" in run.stdout
    assert len(_files(tmp_path / "out")) == 3
    missing = tmp_path / "no_such_folder"
    run = subprocess.run([sys.executable, script, "--input_path", str(missing), "--output_path", str(tmp_path / "o")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and str(missing) in run.stderr and "not found" in run.stderr
    # In process (same code path, no second torch import): a folder without images is exit 2 too.
    (tmp_path / "txt_only").mkdir()
    (tmp_path / "txt_only" / "a.txt").write_text("x")
    main = _load_script("generate_xdog_sketch").main
    assert main(["--input_path", str(tmp_path / "txt_only"), "--output_path", str(tmp_path / "o"), "--quiet"]) == 2
    with pytest.warns(RuntimeWarning, match="skipped 2"):
        assert main(["--input_path", str(tmp_path / "in"), "--output_path", str(tmp_path / "out"), "--quiet"]) == 0


# ------------------------------------------------------------------------------------- masks


def test_generate_masks_script_count_area_flist_and_seed(tmp_path, capsys):
    main = _load_script("generate_masks").main
    assert main(["--output_path", str(tmp_path / "m"), "--count", "6", "--size", "32", "--area", "0.1", "0.2",
                 "--seed", "3", "--quiet"]) == 0
    names = sorted(os.listdir(tmp_path / "m"))
    assert names == [f"{i:05d}.png" for i in range(6)] + ["masks.flist"]
    assert (tmp_path / "m" / "masks.flist").read_text().splitlines() == names[:6]
    masks = [cv2.imread(str(tmp_path / "m" / n), cv2.IMREAD_UNCHANGED) for n in names[:6]]
    for m in masks:
        assert m.shape == (32, 32) and set(np.unique(m)) <= {0, 255}
        assert 0.1 <= (m == 255).mean() <= 0.2
    assert len({m.tobytes() for m in masks}) == 6
    # The list is the release's format: MaskSource reads it and returns exactly these masks.
    src = MaskSource(mode_probs={"partial": 1.0}, mask_list=tmp_path / "m" / "masks.flist", file_ratio=1.0)
    mask, origin = src.draw(src.rng(0), 32, 32)
    expected = cv2.imread(origin, cv2.IMREAD_UNCHANGED) > 127
    assert any(np.array_equal(mask, v) for v in (expected, expected[:, ::-1], expected[::-1], expected[::-1, ::-1]))
    # Same seed, same files; another seed, other files.
    write_free_form_masks(tmp_path / "same", 6, size=32, area_range=(0.1, 0.2), seed=3, progress=False)
    write_free_form_masks(tmp_path / "other", 6, size=32, area_range=(0.1, 0.2), seed=4, progress=False)
    for n in names[:6]:
        assert (tmp_path / "same" / n).read_bytes() == (tmp_path / "m" / n).read_bytes()
    assert any((tmp_path / "other" / n).read_bytes() != (tmp_path / "m" / n).read_bytes() for n in names[:6])
    assert main(["--output_path", str(tmp_path / "bad"), "--count", "2", "--area", "0.5", "0.1", "--quiet"]) == 2


def _mask_folder(folder, rows):
    """Two 16 x 16 masks whose white region is the given rows (so a mask tells which set it is from)."""
    os.makedirs(folder, exist_ok=True)
    for k in range(2):
        img = np.zeros((16, 16), np.uint8)
        img[rows, k * 4:] = 255
        cv2.imwrite(os.path.join(folder, f"{k}.png"), img)


def _set_of(mask):
    """'A' if only horizontal-edge rows (A: rows 0-3 or mirrored 12-15) are set, 'B' for B's middle rows."""
    rows = np.flatnonzero(mask.any(axis=1))
    if set(rows) <= set(range(0, 4)) | set(range(12, 16)):
        return "A"
    if set(rows) <= set(range(6, 10)):
        return "B"
    return "?"


def test_mask_sets_mix_at_the_requested_ratio_with_their_own_invert(tmp_path):
    _mask_folder(tmp_path / "A", slice(0, 4))
    os.makedirs(tmp_path / "B_inverted")
    for k in range(2):  # white except a black patch in the middle rows: the hole once inverted
        img = np.full((16, 16), 255, np.uint8)
        img[6:10, k * 4:] = 0
        cv2.imwrite(str(tmp_path / "B_inverted" / f"{k}.png"), img)
    src = MaskSource(mode_probs={"partial": 1.0}, file_ratio=1.0, seed=1,
                     mask_sets=[{"mask_files": str(tmp_path / "A"), "weight": 3.0},
                                {"mask_files": str(tmp_path / "B_inverted"), "weight": 1.0, "invert": True}])
    n = 300
    sets = [_set_of(src.sample(i, 16, 16)) for i in range(n)]
    assert "?" not in sets
    assert abs(sets.count("A") / n - 0.75) < 0.08, sets.count("A")
    # Default weights: 50/50, the release's irregular vs segmentation mix.
    even = MaskSource(mode_probs={"partial": 1.0}, file_ratio=1.0,
                      mask_sets=[{"mask_files": str(tmp_path / "A")},
                                 {"mask_files": str(tmp_path / "B_inverted"), "invert": True}])
    share = [_set_of(even.sample(i, 16, 16)) for i in range(n)].count("A") / n
    assert abs(share - 0.5) < 0.09, share
    # Mode mix still applies on top of the sets.
    mixed = MaskSource(mode_probs={"partial": 0.7, "full": 0.3}, file_ratio=1.0,
                       mask_sets=[{"mask_files": str(tmp_path / "A")}])
    full = sum(bool(mixed.sample(i, 16, 16).min() == 1) for i in range(n)) / n
    assert abs(full - 0.3) < 0.08


def test_one_mask_set_is_the_old_shorthand(tmp_path):
    _mask_folder(tmp_path / "A", slice(0, 4))
    old = MaskSource(mask_files=tmp_path / "A", file_ratio=0.5, seed=2)
    new = MaskSource(mask_sets=[{"mask_files": str(tmp_path / "A")}], file_ratio=0.5, seed=2)
    assert old.paths == new.paths
    assert all(np.array_equal(old.sample(i, 16, 16), new.sample(i, 16, 16)) for i in range(40))
    with pytest.raises(ValueError, match="not both"):
        MaskSource(mask_files=tmp_path / "A", mask_sets=[{"mask_files": str(tmp_path / "A")}])
    with pytest.raises(ValueError, match=r"unknown keys \['folder'\]"):
        MaskSource(mask_sets=[{"folder": str(tmp_path / "A")}])
    with pytest.raises(ValueError, match="weight"):
        MaskSource(mask_sets=[{"mask_files": str(tmp_path / "A"), "weight": 0}])


# -------------------------------------------------------------------------------- FaceDataset


def _faces(root, n=3, size=64):
    paths = []
    for i in range(n):
        paths.append(root / f"{i // 2:02d}" / f"{i:05d}.png")
        _write(paths[-1], _photo(10 + i, size, size))
    return paths


def test_face_dataset_folder_and_flist_modes(tmp_path):
    paths = _faces(tmp_path / "ffhq", 3)
    ds = FaceDataset(root=tmp_path / "ffhq", size=32, flip=False)
    assert len(ds) == 3 and ds.paths == [str(p) for p in paths]
    item = ds[2]
    assert set(item) == {"image", "path", "index"} and item["index"] == 2 and item["path"] == str(paths[2])
    assert item["image"].shape == (32, 32, 3) and item["image"].dtype == np.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    expected = cv2.resize(_photo(12), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(item["image"], expected, atol=1e-6)
    # Release flist in another folder, relative to the list, and relative to root.
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "val.flist").write_text("../ffhq/00/00001.png\n# comment\n../ffhq/01/00002.png\n")
    by_list = FaceDataset(flist=tmp_path / "lists" / "val.flist", size=32, flip=False)
    assert len(by_list) == 2 and np.array_equal(by_list[1]["image"], item["image"])
    (tmp_path / "lists" / "rel.flist").write_text("01/00002.png\n")
    by_root = FaceDataset(root=tmp_path / "ffhq", flist=tmp_path / "lists" / "rel.flist", size=32, flip=False)
    assert np.array_equal(by_root[0]["image"], item["image"])
    with pytest.raises(TypeError, match="unexpected keyword"):
        FaceDataset(root=tmp_path / "ffhq", sizes=32)
    with pytest.raises(ValueError, match="exactly one"):
        FaceDataset(root=tmp_path / "ffhq", npy_root=tmp_path / "ffhq")
    with pytest.raises(FileNotFoundError, match="no_such.flist"):
        FaceDataset(flist=tmp_path / "no_such.flist")


def test_face_dataset_reads_tamings_npy_layout(tmp_path):
    photos = [_photo(20 + i, 48, 64) for i in range(2)]
    os.makedirs(tmp_path / "celebahq")
    for i, p in enumerate(photos):  # taming: (1, 3, H, W) uint8 per file, listed relative to the folder
        np.save(tmp_path / "celebahq" / f"imgHQ{i:05d}.npy", p.transpose(2, 0, 1)[None])
        _write(tmp_path / "png" / f"imgHQ{i:05d}.png", p)
    (tmp_path / "celebahqtrain.txt").write_text("imgHQ00001.npy\nimgHQ00000.npy\n")
    npy = FaceDataset(npy_root=tmp_path / "celebahq", npy_flist=tmp_path / "celebahqtrain.txt", size=32,
                      sketch="xdog", flip=False)
    png = FaceDataset(root=tmp_path / "png", size=32, sketch="xdog", flip=False)
    assert len(npy) == 2 and npy[0]["path"].endswith("imgHQ00001.npy")
    for key in ("image", "sketch"):
        assert np.array_equal(npy[0][key], png[1][key]) and np.array_equal(npy[1][key], png[0][key])
    # taming's own reading of the same file: np.load(path).squeeze(0).transpose(1, 2, 0).
    taming = np.transpose(np.load(tmp_path / "celebahq" / "imgHQ00000.npy").squeeze(0), (1, 2, 0))
    assert np.array_equal(load_npy_image(str(tmp_path / "celebahq" / "imgHQ00000.npy")), taming)
    assert len(FaceDataset(npy_root=tmp_path / "celebahq", size=32)) == 2  # folder alone


def test_precomputed_sketches_equal_on_the_fly(tmp_path):
    _faces(tmp_path / "ffhq", 3, size=64)
    sketch_folder(tmp_path / "ffhq", tmp_path / "sketch", size=32, progress=False)
    on_the_fly = FaceDataset(root=tmp_path / "ffhq", size=32, sketch="xdog", flip=False)
    from_folder = FaceDataset(root=tmp_path / "ffhq", size=32, sketch=tmp_path / "sketch", flip=False)
    (tmp_path / "sketch.flist").write_text("".join(f"sketch/{p}\n" for p in _files(tmp_path / "sketch")))
    from_list = FaceDataset(root=tmp_path / "ffhq", size=32, sketch_flist=tmp_path / "sketch.flist", flip=False)
    for i in range(3):
        a = on_the_fly[i]["sketch"]
        assert a.shape == (32, 32, 1) and a.dtype == np.float32 and -1.0 <= a.min() and a.max() <= 1.0
        assert (a < 0).any() and (a > 0).mean() > 0.5  # ink on paper
        assert np.array_equal(a, from_folder[i]["sketch"]) and np.array_equal(a, from_list[i]["sketch"])
    # Sketches listed in a flist whose images sit elsewhere: matched by stem.
    (tmp_path / "images.flist").write_text("ffhq/01/00002.png\n")
    by_stem = FaceDataset(flist=tmp_path / "images.flist", size=32, sketch=tmp_path / "sketch" / "01", flip=False)
    assert np.array_equal(by_stem[0]["sketch"], on_the_fly[2]["sketch"])


def test_mismatched_sketches_fail_at_construction(tmp_path):
    paths = _faces(tmp_path / "ffhq", 3)
    sketch_folder(tmp_path / "ffhq", tmp_path / "sketch", size=32, progress=False)
    os.remove(tmp_path / "sketch" / "01" / "00002.png")
    with pytest.raises(ValueError, match=r"1 of 3 images have no sketch .*00002\.png"):
        FaceDataset(root=tmp_path / "ffhq", size=32, sketch=tmp_path / "sketch")
    (tmp_path / "short.flist").write_text("sketch/00/00000.png\nsketch/00/00001.png\n")
    with pytest.raises(ValueError, match=r"lists 2 sketches but there are 3 images.*First unmatched: '.*00002\.png'"):
        FaceDataset(root=tmp_path / "ffhq", sketch_flist=tmp_path / "short.flist")
    (tmp_path / "gone.flist").write_text("sketch/00/00000.png\nsketch/00/00001.png\nsketch/01/00002.png\n")
    with pytest.raises(ValueError, match=r"1 of 3 sketches .* do not exist: '.*00002\.png'"):
        FaceDataset(root=tmp_path / "ffhq", sketch_flist=tmp_path / "gone.flist")
    with pytest.raises(FileNotFoundError, match="no_sketches"):
        FaceDataset(root=tmp_path / "ffhq", sketch=tmp_path / "no_sketches")
    assert len(paths) == 3


def test_flip_moves_image_sketch_and_mask_together(tmp_path):
    _faces(tmp_path / "ffhq", 1, size=32)
    kwargs = dict(root=tmp_path / "ffhq", size=32, sketch="xdog", mask_source={"mode_probs": {"partial": 1.0}},
                  seed=4)
    plain = FaceDataset(flip=False, **kwargs)[0]
    ds = FaceDataset(flip=True, **kwargs)
    assert np.array_equal(plain["mask"][:, :, 0], ds.mask_source.sample(0, 32, 32, stream=4))
    for key in ("image", "sketch", "mask"):  # asymmetric, so a flip is visible in each
        assert not np.array_equal(plain[key], plain[key][:, ::-1])
    seen = set()
    torch.manual_seed(0)
    for _ in range(12):
        item = ds[0]
        state = {}
        for key in ("image", "sketch", "mask"):
            if np.array_equal(item[key], plain[key]):
                state[key] = False
            elif np.array_equal(item[key], plain[key][:, ::-1]):
                state[key] = True
        assert len(state) == 3 and len(set(state.values())) == 1, state
        seen.add(state["image"])
    assert seen == {False, True}
    torch.manual_seed(5)
    first = [ds[0]["image"] for _ in range(4)]
    torch.manual_seed(5)
    assert all(np.array_equal(a, ds[0]["image"]) for a in first)  # torch's seed fixes the flips


def test_unreadable_images_and_sketches_are_skipped_and_counted(tmp_path):
    _faces(tmp_path / "ffhq", 3, size=32)
    sketch_folder(tmp_path / "ffhq", tmp_path / "sketch", size=32, progress=False)
    (tmp_path / "ffhq" / "00" / "00001.png").write_bytes(b"broken")
    ds = FaceDataset(root=tmp_path / "ffhq", size=32, flip=False, mask_source={"mode_probs": {"full": 1.0}})
    with pytest.warns(RuntimeWarning, match=r"00001\.png.*1 skipped so far"):
        item = ds[1]
    assert item["index"] == 2 and item["path"].endswith("00002.png") and item["mask"].min() == 1
    with pytest.warns(RuntimeWarning, match="2 skipped so far"):
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 32, 32, 3) and batch["index"].tolist() == [0, 2, 2]
    assert ds.skipped == 2
    # A broken precomputed sketch is skipped the same way.
    _write(tmp_path / "ffhq" / "00" / "00001.png", _photo(11, 32, 32))
    (tmp_path / "sketch" / "00" / "00000.png").write_bytes(b"")
    with_sketch = FaceDataset(root=tmp_path / "ffhq", size=32, flip=False, sketch=tmp_path / "sketch")
    with pytest.warns(RuntimeWarning, match=r"sketch.*00000\.png.*1 skipped"):
        assert with_sketch[0]["index"] == 1


def test_image_files_docstring_examples():
    failures, _ = doctest.testmod(image_files)
    assert failures == 0


def test_write_split_flists(tmp_path):
    _faces(tmp_path / "ffhq", 5, size=16)
    train, val = write_split_flists(tmp_path / "ffhq", tmp_path / "data", n_val=2, seed=0, prefix="ffhq_")
    assert train.endswith("ffhq_train.flist") and val.endswith("ffhq_val.flist")
    t, v = read_flist(train), read_flist(val)
    assert len(t) == 3 and len(v) == 2 and not set(t) & set(v)
    assert sorted(os.path.normpath(p) for p in t + v) == [str(p) for p in sorted((tmp_path / "ffhq").rglob("*.png"))]
    assert open(val).read().startswith("../ffhq/")  # relative to the list
    write_split_flists(tmp_path / "ffhq", tmp_path / "again", n_val=2, seed=0)  # same seed, same split
    again = read_flist(tmp_path / "again" / "val.flist")
    assert [os.path.basename(p) for p in again] == [os.path.basename(p) for p in v]
    write_split_flists(tmp_path / "ffhq", tmp_path / "last", n_val=2, shuffle=False)
    assert [os.path.basename(p) for p in read_flist(tmp_path / "last" / "val.flist")] == ["00003.png", "00004.png"]
    assert len(FaceDataset(flist=val, size=16)) == 2
    with pytest.raises(ValueError, match=r"n_val must be .* \[1, 4\]"):
        write_split_flists(tmp_path / "ffhq", tmp_path / "x", n_val=5)


# ------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name, keys", [
    ("sketch_vqgan_ffhq", {"image", "sketch", "path", "index"}),
    ("tsvqgan_ffhq", {"image", "path", "index"}),
    ("tsvqgan_ffhq_stage2", {"image", "mask", "path", "index"}),
])
def test_ffhq_configs_build_their_datasets(tmp_path, name, keys):
    _faces(tmp_path / "ffhq", 3, size=64)
    (tmp_path / "train.flist").write_text("ffhq/00/00000.png\nffhq/00/00001.png\n")
    (tmp_path / "val.flist").write_text("ffhq/01/00002.png\n")
    _mask_folder(tmp_path / "irregular", slice(0, 4))
    _mask_folder(tmp_path / "segmentation", slice(6, 10))
    for kind in ("irregular", "segmentation"):
        (tmp_path / f"{kind}_masks.flist").write_text("\n".join(f"{kind}/{k}.png" for k in range(2)) + "\n")
    config = OmegaConf.load(os.path.join(REPO, "configs", f"{name}.yaml"))
    data = config.data.params
    for split, flist in (("train", "train.flist"), ("validation", "val.flist")):
        spec = data[split]
        assert spec.target == "ilat_ext.data.faces.FaceDataset"
        assert spec.params.size == 256 and spec.params.flist == f"data/ffhq_{flist}"
        assert spec.params.flip == (split == "train")
        spec.params.flist, spec.params.size = str(tmp_path / flist), 64
        if "mask_source" in spec.params:
            sets = spec.params.mask_source.mask_sets
            assert [s.weight for s in sets] == [0.5, 0.5] and spec.params.mask_source.file_ratio == 1.0
            for s in sets:
                s.mask_list = str(tmp_path / os.path.basename(s.mask_list))
        ds = instantiate_from_config(spec)
        assert isinstance(ds, FaceDataset) and len(ds) == (2 if split == "train" else 1)
        item = ds[0]
        assert set(item) == keys
        assert item["image"].shape == (64, 64, 3) and item["image"].dtype == np.float32
        if "sketch" in keys:
            assert item["sketch"].shape == (64, 64, 1) and config.model.params.image_key == "sketch"
            assert item["sketch"].min() < 0 < item["sketch"].max()  # ink and paper
        if "mask" in keys:
            assert item["mask"].shape == (64, 64, 1) and set(np.unique(item["mask"])) <= {0.0, 1.0}
    if name == "tsvqgan_ffhq_stage2":  # the release mix: 70% partial / 30% full, both sets used
        source = instantiate_from_config(data.train).mask_source
        assert source.mode_probs == {"partial": 0.7, "empty": 0.0, "full": 0.3}
        origins = {os.path.dirname(source.draw(source.rng(i), 16, 16)[1]) for i in range(60)}
        assert {str(tmp_path / "irregular"), str(tmp_path / "segmentation")} <= origins
