"""ilat-edit-face (scripts/edit_face.py) and ilat_ext.apps.edit on tiny toy iLAT and Taming runs trained once
for the module. The script's outputs are compared with the same edit made through the library."""
import os
import runpy

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ilat_ext.apps import edit
from ilat_ext.apps.image_io import tensor_to_uint8
from ilat_ext.data import ToyFaces
from ilat_ext.data.image_files import resize_square
from ilat_ext.data.folder import read_rgb
from ilat_ext.masks import latent_mask
from ilat_ext.util import instantiate_from_config
from tests.helpers import REPO
from tests.test_ilat_chain import train_toy_transformers

SCRIPT = os.path.join(REPO, "scripts", "edit_face.py")
H, W = 80, 96  # a non-square source: the model sees its centre 80x80 square, resized to 64


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"ilat": run dir, "taming": run dir, "vqgan": a run of a first-stage model}, one training step each."""
    tmp = tmp_path_factory.mktemp("edit_runs")
    out = train_toy_transformers(tmp)
    # a run whose model is a VQGAN, not a transformer
    cfg = OmegaConf.load(os.path.join(REPO, "configs", "toy", "ilat.yaml")).model.params.cond_stage_config
    cfg.params.ckpt_path = None
    vq = tmp / "logs" / "vqgan"
    (vq / "configs").mkdir(parents=True)
    (vq / "checkpoints").mkdir()
    OmegaConf.save(OmegaConf.create({"model": cfg}), str(vq / "configs" / "x-project.yaml"))
    torch.save({"state_dict": instantiate_from_config(cfg).state_dict()}, str(vq / "checkpoints" / "last.ckpt"))
    out["vqgan"] = str(vq)
    return out


def _write(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    return path


def _face_files(folder, index=0, empty=False, name="face.png"):
    """A toy face enlarged to W x H, a rectangle mask (or an empty one) and one stroke, as pngs."""
    face = cv2.resize(ToyFaces(size=64, length=4, split="test", mask=False).face(index), (W, H))
    mask = np.zeros((H, W), np.uint8)
    if not empty:
        mask[30:55, 35:70] = 255
    strokes = np.full((H, W), 255, np.uint8)
    cv2.line(strokes, (38, 40), (66, 50), 0, 2)
    return (_write(os.path.join(folder, "images", name), face), _write(os.path.join(folder, "masks", name), mask),
            _write(os.path.join(folder, "strokes", name), strokes))


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(SCRIPT)["main"]


def _rgb(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def test_script_writes_the_edit_and_a_six_column_labelled_grid(runs, script, tmp_path, capsys):
    image, mask, strokes = _face_files(str(tmp_path))
    out, grid = str(tmp_path / "result.png"), str(tmp_path / "grid.png")
    rc = script(["--run", runs["ilat"], "--image", image, "--mask", mask, "--strokes", strokes, "--out", out,
                 "--taming", runs["taming"], "--grid", grid, "--device", "cpu", "--model_size"])
    assert rc == 0
    assert "toy XDoG" in capsys.readouterr().out      # the toy run's sketches are made like ToyFaces'
    assert _rgb(out).shape == (64, 64, 3)
    g = _rgb(grid)
    assert g.shape[1] == 6 * 64 + 5 * 2               # input | mask | sketch | Taming | Taming* | iLAT
    header = g.shape[0] - 64
    assert 0 < header < 64
    for j in range(6):                                # every column has a label drawn above it
        assert (g[:header, j * 66:j * 66 + 64] < 128).any()
    assert np.array_equal(g[header:, :64], read_rgb(image, 64))          # the input column is the input
    # the written edit and every column are what the library computes for these files
    expected = _library_columns(runs, image, mask, strokes)
    assert np.array_equal(_rgb(out), expected["iLAT"])
    for j, name in enumerate(("input", "mask", "sketch", "Taming", "Taming*", "iLAT")):
        assert np.array_equal(g[header:, j * 66:j * 66 + 64], expected[name]), name
    assert not np.array_equal(expected["Taming"], expected["iLAT"])


def _library_columns(runs, image, mask, strokes=None, sketch=None, style=None, taming=True):
    """The grid columns as uint8 (64, 64, 3), computed through ilat_ext.apps.edit (greedy, as the script)."""
    editor = edit.load_editor(runs["ilat"], "cpu")
    inputs = edit.prepare_inputs(image, mask, strokes, editor.size, style or editor.sketch_style, sketch)
    cols = {"input": inputs.x, "mask": inputs.mask * 2 - 1, "sketch": inputs.sketch}
    if taming:
        baseline = edit.load_editor(runs["taming"], "cpu", baseline=True).model
        cols["Taming"] = edit.edit_faces(baseline, inputs.x, inputs.mask, inputs.sketch, "taming").image
        cols["Taming*"] = edit.edit_faces(baseline, inputs.x, inputs.mask, inputs.sketch).image
    cols["iLAT"] = edit.edit_faces(editor.model, inputs.x, inputs.mask, inputs.sketch).image
    return {name: tensor_to_uint8(t, rgb=True)[0] for name, t in cols.items()}


def test_sketch_flag_uses_the_given_sketch_and_xdog_flag_the_named_style(runs, script, tmp_path, capsys):
    """--sketch: the complete sketch is the condition (resized like the image), no XDoG, no strokes;
    --xdog resized: the sketch outside the mask is plain XDoG of the resized face, not the toy style."""
    image, mask, strokes = _face_files(str(tmp_path))
    full = np.full((H, W), 255, np.uint8)
    cv2.circle(full, (W // 2, H // 2), 20, 0, 2)
    sketch = _write(str(tmp_path / "sketch.png"), full)
    out, grid = str(tmp_path / "s.png"), str(tmp_path / "s_grid.png")
    assert script(["--run", runs["ilat"], "--image", image, "--mask", mask, "--sketch", sketch, "--out", out,
                   "--grid", grid, "--device", "cpu", "--model_size"]) == 0
    capsys.readouterr()
    expected = _library_columns(runs, image, mask, sketch=sketch, taming=False)
    g = _rgb(grid)
    header = g.shape[0] - 64
    assert np.array_equal(_rgb(out), expected["iLAT"])
    assert np.array_equal(g[header:, 2 * 66:2 * 66 + 64], expected["sketch"])
    assert np.array_equal(expected["sketch"][:, :, 0], resize_square(full, 64))   # the file itself, resized
    out_x, grid_x = str(tmp_path / "x.png"), str(tmp_path / "x_grid.png")
    assert script(["--run", runs["ilat"], "--image", image, "--mask", mask, "--strokes", strokes, "--out", out_x,
                   "--grid", grid_x, "--xdog", "resized", "--device", "cpu", "--model_size"]) == 0
    assert "resized XDoG" in capsys.readouterr().out
    resized = _library_columns(runs, image, mask, strokes, style="resized", taming=False)
    toy = _library_columns(runs, image, mask, strokes, style="toy", taming=False)
    assert np.array_equal(_rgb(out_x), resized["iLAT"])
    assert np.array_equal(_rgb(grid_x)[header:, 2 * 66:2 * 66 + 64], resized["sketch"])
    assert not np.array_equal(resized["sketch"], toy["sketch"])


@pytest.mark.parametrize("argv, message", [
    ([], "missing --image, --mask, --out"),
    (["--image", "a.png", "--mask", "m.png", "--out", "o.png"], "exactly one of --strokes and --sketch"),
    (["--image", "a.png", "--mask", "m.png", "--out", "o.png", "--strokes", "s.png", "--sketch", "k.png"],
     "exactly one of --strokes and --sketch"),
    (["--input_dir", "d"], "--input_dir needs --out_dir"),
    (["--input_dir", "d", "--out_dir", "o", "--image", "a.png"], "--image cannot be used with --input_dir"),
    (["--input_dir", "d", "--out_dir", "o", "--batch_size", "0"], "--batch_size must be positive, got 0"),
    (["--image", "a.png", "--mask", "m.png", "--out", "o.png", "--strokes", "s.png", "--grid"],
     "--grid needs a path outside batch mode"),
    (["--input_dir", "d", "--out_dir", "o", "--size", "4"], "--size must be >= 8, got 4"),
    (["--input_dir", "d", "--out_dir", "o", "--top_k", "0"], "--top_k must be positive, got 0"),
    (["--input_dir", "d", "--out_dir", "o", "--temperature", "0"], "--temperature must be positive, got 0.0"),
    (["--input_dir", "d", "--out_dir", "o", "--xdog", "pencil"], "argument --xdog: invalid choice: 'pencil'"),
])
def test_argument_errors_exit_2_with_one_line_naming_the_problem(script, capsys, argv, message):
    """Usage errors answer before anything is read or loaded (the paths need not exist)."""
    with pytest.raises(SystemExit) as e:
        script(["--run", "logs/none"] + argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ilat-edit-face: error: ") and message in err[-1], err


def test_empty_mask_is_an_error_and_writes_nothing(runs, script, tmp_path, capsys):
    image, mask, strokes = _face_files(str(tmp_path), empty=True)
    out = str(tmp_path / "result.png")
    assert script(["--run", runs["ilat"], "--image", image, "--mask", mask, "--strokes", strokes, "--out", out,
                   "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "covers nothing" in err[0] and mask in err[0]
    assert not os.path.exists(out)


def test_library_edit_keeps_tokens_outside_the_token_mask(runs, tmp_path):
    """Latent-level Eq. 4 check: every token outside M_q is the input's own encoding; an element with
    an empty mask in the same batch comes back bit-exactly; the pixel mask lies inside M_q."""
    editor = edit.load_editor(runs["ilat"], "cpu")
    assert (editor.size, editor.sketch_style) == (64, "toy")
    edited = edit.prepare_inputs(*_face_files(str(tmp_path / "a")), editor.size, editor.sketch_style)
    idle = edit.prepare_inputs(*_face_files(str(tmp_path / "b"), 1, empty=True), editor.size,
                               options=edit.ReadOptions(allow_empty=True))
    inputs = edit.EditInputs.stack([edited, idle])
    assert inputs.x.shape == (2, 3, 64, 64) and inputs.sketch.shape == (2, 1, 64, 64)
    for kwargs in ({}, {"greedy": False, "top_k": 4, "seed": 0}):
        result = edit.edit_faces(editor.model, inputs.x, inputs.mask, inputs.sketch, **kwargs)
        z, _ = editor.model.encode_target(inputs.x, inputs.mask)
        keep = ~result.token_mask
        assert result.token_mask[0].any() and not result.token_mask[1].any()
        assert torch.equal(result.indices[keep], z[keep])
        cells = latent_mask(inputs.mask, editor.model.first_stage_factor).reshape(2, -1)
        assert torch.equal(cells, result.token_mask)
        assert torch.equal(result.image[1], inputs.x[1])
    # the default output: the edit pasted into the source image inside the user's mask only
    pasted = edit.paste_results(edited, result.image[:1])[0]
    assert pasted.shape == (H, W, 3)
    assert np.array_equal(pasted[~edited.masks_full[0]], edited.originals[0][~edited.masks_full[0]])
    assert not np.array_equal(pasted, edited.originals[0])
    # the sketch is the strokes inside the mask and the toy-style XDoG outside it
    sketch = edited.sketch[0, 0]
    outside = edit.toy_style_sketch(read_rgb(os.path.join(tmp_path, "a", "images", "face.png"), 64))
    keep_px = edited.mask[0, 0] == 0
    assert torch.equal(sketch[keep_px], torch.from_numpy(outside.astype(np.float32) / 127.5 - 1)[keep_px])


def test_toy_style_sketch_matches_the_training_sketches():
    """On toy faces the 4x-supersampled XDoG is close to ToyFaces' sketches, plain XDoG on 64 px is not."""
    faces = ToyFaces(size=64, length=4, split="test", mask=False)
    err_toy, err_plain = [], []
    for i in range(4):
        ref = faces.sketch_of(i).astype(float)
        err_toy.append(np.abs(edit.toy_style_sketch(faces.face(i)) - ref).mean())
        err_plain.append(np.abs(edit.original_sketch(faces.face(i), 64, "resized") - ref).mean())
    assert np.mean(err_toy) < 12 < 3 * np.mean(err_toy) < np.mean(err_plain)


def test_batch_mode_skips_and_counts(runs, script, tmp_path, capsys):
    data, out = str(tmp_path / "in"), str(tmp_path / "out")
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        _face_files(data, i, name=name)
    os.remove(os.path.join(data, "masks", "c.png"))                       # no mask
    open(os.path.join(data, "images", "notes.txt"), "w").write("not an image")
    with open(os.path.join(data, "images", "broken.png"), "wb") as f:    # image name, not decodable
        f.write(b"garbage")
    for kind in ("masks", "strokes"):
        open(os.path.join(data, kind, "broken.png"), "wb").write(b"garbage")
    rc = script(["--run", runs["ilat"], "--input_dir", data, "--out_dir", out, "--batch_size", "2", "--grid",
                 "--quiet"])
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "2 edited" in summary and "1 no mask" in summary and "1 not an image" in summary
    assert "1 unreadable or unusable" in summary
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "grids"]
    assert sorted(os.listdir(os.path.join(out, "grids"))) == ["a.png", "b.png"]
    assert _rgb(os.path.join(out, "a.png")).shape == (H, W, 3)                   # the source's size
    assert _rgb(os.path.join(out, "grids", "a.png")).shape[1] == 5 * 64 + 4 * 2   # input | mask | sketch | iLAT | result


def test_clear_errors(runs, script, tmp_path, capsys):
    image, mask, strokes = _face_files(str(tmp_path))
    small = _write(str(tmp_path / "small_mask.png"), np.zeros((64, 64), np.uint8))
    base = ["--run", runs["ilat"], "--image", image, "--out", str(tmp_path / "r.png")]

    assert script(base + ["--mask", small, "--strokes", strokes]) == 2
    err = capsys.readouterr().err
    assert "64x64" in err and f"{W}x{H}" in err and "small_mask.png" in err

    missing = str(tmp_path / "nope.png")
    assert script(base + ["--mask", mask, "--strokes", missing]) == 2
    assert missing in capsys.readouterr().err

    assert script(["--run", str(tmp_path / "no_run"), "--image", image, "--mask", mask, "--strokes", strokes,
                   "--out", str(tmp_path / "r.png")]) == 2
    assert "no_run" in capsys.readouterr().err

    empty_run = tmp_path / "empty_run"
    (empty_run / "checkpoints").mkdir(parents=True)
    assert script(base[:0] + ["--run", str(empty_run)] + base[2:] + ["--mask", mask, "--strokes", strokes]) == 2
    assert "last.ckpt" in capsys.readouterr().err

    assert script(base + ["--mask", mask, "--strokes", strokes, "--path", "release"]) == 2
    assert "not converted from the authors' checkpoints" in capsys.readouterr().err

    assert script(["--run", runs["vqgan"]] + base[2:] + ["--mask", mask, "--strokes", strokes]) == 2
    assert "not a TamingTransformer" in capsys.readouterr().err

    unreadable = str(tmp_path / "broken.png")
    open(unreadable, "wb").write(b"garbage")
    assert script(["--run", runs["ilat"], "--image", unreadable, "--mask", mask, "--strokes", strokes,
                   "--out", str(tmp_path / "r.png")]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r.png")
