"""The browser editor (`ilat-editor`, `ilat_ext.apps.editor`) in a real browser: headless Chromium
(Debian's `chromium`) driven by playwright, against the editor served in a subprocess on a free
localhost port with tiny toy runs. A face is uploaded, a mask and strokes are painted with real
mouse events on the canvas's two layers, Edit runs Taming, Taming* and iLAT; the result fetched
from the page has the upload's size, its pixels outside the mask are the upload's, inside they
differ, and the token count shown is the mask's. Bad requests (no mask, an unreadable upload) are
messages in the page and the server keeps serving. The screenshot is written to
$ILAT_EDITOR_SCREENSHOT when set (docs/editor.png is made so, with $ILAT_EDITOR_DEMO=demo after the
main job)."""
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests import photos
from tests.helpers import REPO
from tests.test_ilat_chain import train_toy_transformers
from tests.test_pose_guide import train_pose_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The face runs laid out as a demo folder (DEMO/logs/<time>_ilat, <time>_taming), and pose runs.
    $ILAT_EDITOR_DEMO names the folder of a finished main job to use instead (docs/editor.png is
    taken so, with the demo's trained runs)."""
    import glob

    pose = tmp_path_factory.mktemp("editor_pose")
    finished = os.environ.get("ILAT_EDITOR_DEMO")
    if finished:
        found = {name: sorted(glob.glob(os.path.join(finished, "logs", f"*_{name}")))[-1] for name in ("ilat", "taming")}
        return dict(found, demo=finished, pose=train_pose_runs(pose)["ilat"])
    demo = tmp_path_factory.mktemp("editor_demo")
    return dict(train_toy_transformers(demo), demo=str(demo), pose=train_pose_runs(pose)["ilat"])


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """The editor on a free port: (url, process); its output is in the log file."""
    port = _free_port()
    log = tmp_path_factory.mktemp("editor_server") / "server.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=REPO + os.pathsep
               + os.environ.get("PYTHONPATH", ""), NO_PROXY="127.0.0.1,localhost")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "editor.py"), "--demo", runs["demo"],
                                 "--pose_run", runs["pose"], "--port", str(port), "--device", "cpu",
                                 "--max_pixels", "40000", "--max_file_size", "1"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.time() + 120
    while "Serving the iLAT editor at" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the editor did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    url = re.search(r"Serving the iLAT editor at (\S+)", log.read_text()).group(1)
    assert url == f"http://127.0.0.1:{port}/"             # bound to localhost by default
    assert f"baseline {runs['taming']}" in log.read_text()  # --demo: its ilat run, with its taming run
    yield url, proc, log
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]' (.ci/run installs it)")
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: apt-get install -y chromium (.ci/run installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
                                          "--enable-unsafe-swiftshader"])   # WebGL on the CPU: the canvas
        page = browser.new_page(viewport={"width": 1400, "height": 1250})
        page.set_default_timeout(60_000)
        elsewhere = []                                     # requests the page makes beyond the editor
        page.on("request", lambda r: None if r.url.startswith((server[0], "data:", "blob:"))
                else elsewhere.append(r.url))
        yield page
        assert not elsewhere, elsewhere[:5]                # no fonts, analytics or CDNs: localhost only
        browser.close()


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    """A held-out toy face enlarged to 192 x 192 (not the model's size), as a PNG."""
    import cv2

    from ilat_ext.data import ToyFaces

    image = ToyFaces(size=64, length=1, split="test", mask=False, sketch=False)[0]["image"]
    image = np.clip(np.rint((image + 1) * 127.5), 0, 255).astype(np.uint8)
    big = cv2.resize(image, (192, 192), interpolation=cv2.INTER_CUBIC)
    return photos.save(tmp_path_factory.mktemp("face") / "face.png", big)


def _open(page, url, photo):
    page.goto(url)
    page.set_input_files("#photo_file input[type=file]", photo)
    page.wait_for_function("document.querySelector('#face_status').innerText.includes('loaded')")
    page.wait_for_timeout(500)


def _image_box(page):
    """(left, top, side) of the photo on the screen: the canvas centres it at the zoom shown."""
    box = page.locator("#canvas canvas").first.bounding_box()
    zoom = float(re.search(r"(\d+)%", page.locator("#canvas").inner_text()).group(1)) / 100
    side = 512 * zoom                                   # canvas_background: a 192-px photo is shown at 512
    return box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2, side


def _paint(page, x0, y0, x1, y1, step=8):
    """Brush strokes covering the box (fractions of the photo): mouse down, a zigzag of moves one
    brush width apart (the canvas draws the segments between them), mouse up. Few moves: each one
    redraws the canvas, about a quarter of a second in software rendering on 2 cores."""
    left, top, side = _image_box(page)
    X, Y = (lambda f: left + f * side), (lambda f: top + f * side)
    m = page.mouse
    m.move(X(x0), Y(y0))
    m.down()
    y, right = Y(y0), True
    while True:
        m.move(X(x1) if right else X(x0), y)
        right = not right
        if y >= Y(y1):
            break
        y = min(y + step, Y(y1))
        m.move(X(x0) if right else X(x1), y)
    m.up()


def _line(page, a, b):
    left, top, side = _image_box(page)
    m = page.mouse
    m.move(left + a[0] * side, top + a[1] * side)
    m.down()
    m.move(left + b[0] * side, top + b[1] * side, steps=3)
    m.up()


def _layer(page, n):
    if not page.locator('#canvas button[aria-label="layer-1"]').is_visible():
        page.click("#canvas button.layer-title-button")
    page.click(f'#canvas button[aria-label="layer-{n}"]')


def _fetch(page, elem_id) -> np.ndarray:
    from PIL import Image

    img = page.locator(f"#{elem_id} img").first
    img.wait_for()
    response = page.request.get(img.get_attribute("src"))
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def _status(page) -> str:
    return page.locator("#face_status").inner_text()


def test_edit_a_face_drawn_in_the_browser(server, page, face, runs):
    from ilat_ext.apps.photo_io import full_region
    from ilat_ext.masks import latent_mask
    from ilat_ext.runs import load_run

    url, proc, _ = server
    start = time.perf_counter()
    _open(page, url, face)
    _paint(page, 0.3, 0.55, 0.7, 0.8)                      # layer 1, "mask": the mouth
    _layer(page, 2)                                        # "strokes": a smile inside it, in black
    page.click('#canvas button[aria-label="Color"]')
    page.click('#canvas button.color[style*="rgb(0, 0, 0)"]')
    page.click('#canvas button[aria-label="Brush"]')
    _line(page, (0.38, 0.65), (0.62, 0.7))
    page.click("#edit")
    page.wait_for_function("document.querySelector('#face_table').innerText.includes('iLAT')", timeout=90_000)
    seconds = time.perf_counter() - start
    source = photos.decoded(face)
    result = _fetch(page, "result_ilat")
    mask = _fetch(page, "shown_mask")[:, :, 0] > 127
    assert result.shape == source.shape == (192, 192, 3)
    # the mask lies where it was painted (to a few pixels: the brush's width and the zoom's rounding)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert abs(rows[0] - 0.55 * 192) < 12 and abs(rows[-1] - 0.8 * 192) < 12
    assert abs(cols[0] - 0.3 * 192) < 12 and abs(cols[-1] - 0.7 * 192) < 12
    assert np.array_equal(result[~mask], source[~mask])  # bit for bit outside the mask
    assert (result[mask] != source[mask]).any()
    for name in ("result_taming", "result_taming_star"):
        other = _fetch(page, name)
        assert other.shape == source.shape and np.array_equal(other[~mask], source[~mask])
    # the condition sketch shows the strokes: dark pixels inside the mask along the line
    sketch = _fetch(page, "shown_sketch")
    assert sketch.shape == (64, 64, 3)
    # tokens: the latent cells the model-size mask touches
    model, _ = load_run(runs["ilat"])
    model_mask = full_region(mask.shape).mask_to_model(mask, 64)
    tokens = int(latent_mask(torch.from_numpy(model_mask.astype(np.float32))[None, None],
                             model.first_stage_factor).sum())
    table = page.locator("#face_table").inner_text()
    for method in ("Taming*", "iLAT"):                     # the masked tokens only
        assert re.search(rf"{re.escape(method)}\s+[\d.]+\s+{tokens} of 256", table), (method, table)
    taming = int(re.search(r"Taming\s+[\d.]+\s+(\d+) of 256", table).group(1))
    assert taming > tokens                                 # Taming: everything after the first masked token
    shot = os.environ.get("ILAT_EDITOR_SCREENSHOT")
    page.screenshot(path=shot or os.path.join(os.path.dirname(str(face)), "editor.png"), full_page=True)
    print(f"\nbrowser edit: {seconds:.1f} s from upload to results; table:\n{table}")
    assert proc.poll() is None


def test_no_mask_and_a_broken_upload_are_messages_and_the_server_keeps_serving(server, page, face, tmp_path):
    url, proc, log = server
    _open(page, url, face)
    page.click("#edit")                                    # nothing drawn
    page.wait_for_function("document.querySelector('#face_status').innerText.includes('no mask drawn')")
    assert "Traceback" not in page.content()
    broken = photos.truncated_copy(face, tmp_path / "broken.png")
    page.goto(url)
    page.set_input_files("#photo_file input[type=file]", broken)
    page.wait_for_function("document.querySelector('#face_status').innerText.includes('truncated or corrupt')")
    page.goto(url)                                         # over --max_pixels 40000: a message
    page.set_input_files("#photo_file input[type=file]", photos.save(tmp_path / "big.png", photos.photo(256, 256)))
    page.wait_for_function("document.querySelector('#face_status').innerText.includes('over the limit')")
    page.goto(url)                                         # over --max_file_size 1 (MB): gradio's message
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    page.set_input_files("#photo_file input[type=file]", photos.save(tmp_path / "heavy.png", noise))
    page.get_by_text("exceed the maximum allowed size of 1.0 Mb").first.wait_for()
    assert proc.poll() is None and page.request.get(url).ok
    # the next request is served: an example face, a mask, Edit
    page.goto(url)
    page.get_by_text("held_out_face_1.png").click()
    page.wait_for_function("document.querySelector('#face_status').innerText.includes('loaded')")
    page.wait_for_timeout(500)
    _paint(page, 0.2, 0.2, 0.5, 0.4)
    page.click("#edit")
    page.wait_for_function("document.querySelector('#face_table').innerText.includes('iLAT')", timeout=90_000)
    assert _fetch(page, "result_ilat").shape == (64, 64, 3)
    assert "no strokes drawn" in _status(page)
    assert "Traceback" not in log.read_text()


def _json(path, pose):
    with open(path, "w") as f:
        json.dump({"joints": [[float(x), float(y), int(v)] for x, y, v in np.asarray(pose).tolist()]}, f)
    return str(path)


def _pose_status(page, text):
    page.wait_for_function(f"/{text}/.test(document.querySelector('#pose_status').innerText)")
    return page.locator("#pose_status").inner_text()


def test_pose_guiding_from_a_toy_pair_and_from_json_files(server, page, tmp_path):
    from ilat_ext.apps.editor import toy_pair
    from ilat_ext.data.pose import scale_pose

    url, proc, log = server
    page.goto(url)
    page.get_by_role("tab", name="Pose guiding").click()
    page.click("#pose_use_pair")
    said = _pose_status(page, "synthesized|Error")
    assert re.match(r"synthesized in [\d.]+ s, \d+ tokens regenerated", said), said
    reference, ref_pose, target_pose = toy_pair(64, 0)
    result, mask = _fetch(page, "pose_result"), _fetch(page, "pose_mask")[:, :, 0] > 127
    assert result.shape == reference.shape and mask.any()
    assert np.array_equal(result[~mask], reference[~mask]) and (result[mask] != reference[mask]).any()
    # files: the reference at 128 x 96 (not square, not the model's size), poses in its pixels
    import cv2
    big = cv2.resize(reference, (128, 96), interpolation=cv2.INTER_CUBIC)
    ref_file = photos.save(tmp_path / "reference.png", big)
    ref_json = _json(tmp_path / "ref.json", scale_pose(ref_pose, 2.0, 1.5))
    bad = scale_pose(target_pose, 2.0, 1.5).copy()
    bad[0, :2] = (500, 20)                                 # the head, visible, outside the image
    page.set_input_files("#pose_ref input[type=file]", ref_file)
    page.set_input_files("#pose_ref_json input[type=file]", ref_json)
    page.set_input_files("#pose_target_json input[type=file]", _json(tmp_path / "bad.json", bad))
    page.click("#pose_go")
    said = _pose_status(page, "Error")
    assert "head" in said and "Traceback" not in page.content(), said
    page.goto(url)
    page.get_by_role("tab", name="Pose guiding").click()
    page.set_input_files("#pose_ref input[type=file]", ref_file)
    page.set_input_files("#pose_ref_json input[type=file]", ref_json)
    page.set_input_files("#pose_target_json input[type=file]",
                         _json(tmp_path / "target.json", scale_pose(target_pose, 2.0, 1.5)))
    page.click("#pose_go")
    assert "synthesized" in _pose_status(page, "synthesized|Error")
    result, mask = _fetch(page, "pose_result"), _fetch(page, "pose_mask")[:, :, 0] > 127
    assert result.shape == big.shape and np.array_equal(result[~mask], big[~mask])
    assert proc.poll() is None and "Traceback" not in log.read_text()
