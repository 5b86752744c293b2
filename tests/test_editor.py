"""The browser editor's Python half (`ilat_ext.apps.editor`, `ilat-editor`) without a browser: the
canvas's layers are read like paint-layer files, an edit from the canvas is the edit
`ilat-edit-face` makes from the same mask and strokes as files, bad canvases are `Problem`s, and
the command refuses runs it cannot serve before it serves anything. (In a real browser:
tests/test_editor_browser.py.)"""
import doctest
import os
import runpy

import numpy as np
import pytest

from ilat_ext.apps import editor
from ilat_ext.apps import photo_io as pio
from tests import photos
from tests.helpers import REPO
from tests.test_ilat_chain import train_toy_transformers


def test_doctests():
    failures, attempted = doctest.testmod(editor)
    assert attempted and not failures


def _layers(shape, mask_box, line):
    """A canvas value at (h, w): a mask layer painted in see-through red inside mask_box, a strokes layer with a line."""
    import cv2

    h, w = shape
    mask = np.zeros((h, w, 4), np.uint8)
    t, b, l, r = mask_box
    mask[t:b, l:r] = (255, 0, 0, 153)
    strokes = np.zeros((h, w, 4), np.uint8)
    cv2.line(strokes, line[0], line[1], (0, 0, 0, 255), 6)
    background = np.full((h, w, 4), 255, np.uint8)
    return {"background": background, "layers": [mask, strokes], "composite": background}


def test_canvas_layers_read_like_paint_layer_files(tmp_path):
    value = _layers((512, 512), (280, 400, 150, 360), ((180, 330), (330, 350)))
    mask, strokes, notes = editor.read_canvas(value, (1024, 1024))          # the photo is twice the canvas
    files_mask = pio.read_mask(photos.save(tmp_path / "m.png", value["layers"][0]), (1024, 1024)).mask
    files_strokes = pio.read_strokes(photos.save(tmp_path / "s.png", value["layers"][1]), (1024, 1024)).sketch
    assert np.array_equal(mask, files_mask) and np.array_equal(strokes, files_strokes)
    assert mask[562:798, 302:718].all() and not mask[:550].any() and not mask[810:].any()
    assert strokes.min() == 0 and strokes.max() == 255
    assert any("of the image to edit" in n for n in notes)


def test_bad_canvases_are_problems():
    with pytest.raises(editor.Problem, match="no photo"):
        editor.read_canvas(None, (64, 64))
    empty = _layers((512, 512), (0, 0, 0, 0), ((10, 10), (20, 20)))
    with pytest.raises(editor.Problem, match="no mask drawn"):
        editor.read_canvas(empty, (64, 64))
    value = _layers((512, 512), (10, 100, 10, 100), ((10, 10), (20, 20)))
    with pytest.raises(pio.InputError, match="aspect ratio"):
        editor.read_canvas(value, (64, 128))
    mask, strokes, notes = editor.read_canvas(dict(value, layers=value["layers"][:1]), (64, 64))
    assert mask.any() and (strokes == 255).all() and any("no strokes drawn" in n for n in notes)
    with pytest.raises(editor.Problem, match="temperature"):
        editor.sampling_from_controls(False, 0, None, None)
    assert editor.sampling_from_controls(True, 1.0, None, None) == \
        {"greedy": True, "temperature": 1.0, "top_k": None, "seed": None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_toy_transformers(tmp_path_factory.mktemp("editor_runs"))


def test_an_edit_from_the_canvas_is_the_commands_edit(runs, tmp_path, capsys):
    from ilat_ext.apps import edit

    source = photos.photo(160, 160, seed=7)
    value = _layers((512, 512), (290, 420, 140, 380), ((170, 350), (340, 360)))
    mask, strokes, notes = editor.read_canvas(value, source.shape[:2])
    ilat = edit.load_editor(runs["ilat"])
    session = editor.FaceSession(ilat, edit.load_editor(runs["taming"], baseline=True).model,
                                 edit.ReadOptions(region="auto", whole_images=ilat.whole_images))
    inputs, results = editor.edit_photo(session, source, mask, strokes, notes=notes)
    assert [r.name for r in results] == ["Taming", "Taming*", "iLAT"]
    token_mask = ilat.model.token_mask(inputs.x, inputs.mask)
    assert results[1].tokens == results[2].tokens == int(token_mask.sum()) < results[0].tokens
    for r in results:
        assert r.image.shape == source.shape and np.array_equal(r.image[~mask], source[~mask])
    # the same photo, mask and strokes as files through ilat-edit-face
    paths = [photos.save(tmp_path / f"{k}.png", a) for k, a in
             (("photo", source), ("mask", value["layers"][0]), ("strokes", value["layers"][1]))]
    out = str(tmp_path / "out.png")
    main = runpy.run_path(os.path.join(REPO, "scripts", "edit_face.py"))["main"]
    assert main(["--run", runs["ilat"], "--image", paths[0], "--mask", paths[1], "--strokes", paths[2],
                 "--out", out, "--device", "cpu"]) == 0
    assert np.array_equal(photos.decoded(out), results[2].image)
    assert "| iLAT |" in editor.results_table(results)


def test_the_command_refuses_what_it_cannot_serve(runs, tmp_path, capsys):
    from ilat_ext.cli import editor as cli

    assert cli.get_parser().parse_args(["--run", "r"]).host == "127.0.0.1"      # this machine only
    with pytest.raises(SystemExit):
        cli.main(["--demo", str(tmp_path)])                                    # no logs/
    assert "no logs/ folder" in capsys.readouterr().err
    assert cli.main(["--run", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    # a Taming run as the iLAT run is fine (Taming* is its local sampling); an iLAT run as baseline is not
    assert cli.main(["--run", runs["ilat"], "--baseline", runs["ilat"], "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "holds an iLAT model" in err and len(err.strip().splitlines()) == 1
    assert not cli.is_pose_run(runs["ilat"])


def test_a_pose_run_is_recognised_from_its_config(tmp_path):
    from ilat_ext.cli import editor as cli
    from tests.test_pose_guide import train_pose_runs

    pose = train_pose_runs(tmp_path)
    assert cli.is_pose_run(pose["ilat"]) and not cli.is_pose_run(pose["vqgan"])
