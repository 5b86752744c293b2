"""The browser editor: draw a mask and strokes on your own photo, see Taming, Taming* and iLAT side
by side (gradio); the library half of `ilat-editor` (scripts/editor.py).

iLAT (Cao et al., NeurIPS 2021, Sec. 4, Fig. 4) exists to edit a region interactively: draw where,
sketch what. The face tab takes a photo (any file `photo_io.read_photo` reads, or one of the run's
held-out faces), a mask and strokes painted on two layers of a `gr.ImageEditor` over it, and shows
the input, the condition sketch the model received (XDoG outside the mask + the strokes inside),
each method's result pasted back at the photo's resolution (`photo_io.paste_edit`: outside the
mask, the photo's pixels bit for bit), and per method the seconds and tokens regenerated. The pose
tab redraws a reference person in a target pose (poses from JSON files, or a toy pair's frames),
showing the union mask and, for runs that warp it, the warped reference.

The canvas is an input like the files of `ilat-edit-face`, read by the same layer: the photo comes
from its file (`read_photo`: formats, EXIF, alpha, the pixel limit from the header) and is shown in
the canvas at `display_size`; the layers come back at the canvas's size with the photo's aspect
ratio and are read as paint layers (`layer_planes`: the mask layer's alpha >= half is the mask
(`photo_io.mask_from_plane`), the strokes layer's opaque pixels are ink (`photo_io.layer_ink`)),
resized to the photo, then `edit.prepare_arrays` / `edit_faces` / `paste_results` as the command does.

Safe by default (`launch`): 127.0.0.1, no share links, no analytics, uploads at most
`max_file_size`, one edit at a time on a queue; a bad request is a message in the page
(`Problem`), never a traceback, and the server keeps serving.
"""
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ilat_ext.apps.photo_io import (DEFAULT_MAX_PIXELS, InputError, check_aspect, layer_ink, mask_from_plane,
                                    read_photo, resize_plane)

logger = logging.getLogger(__name__)

DISPLAY_MIN, DISPLAY_MAX = 512, 1024     # the canvas shows the photo with its long side in this range
FACE_METHODS = ("Taming", "Taming*", "iLAT")
SHOWN = {"height": 256, "buttons": ["fullscreen"]}         # no "share" button: nothing leaves this machine
SAVED = {"height": 256, "buttons": ["download", "fullscreen"]}
FILE = {"height": 110}
MASK_COLOR = ("#ff0000", 0.6)


class Problem(ValueError):
    """A request the editor cannot serve as given; its message is shown in the page."""


# ------------------------------------------------------------------------------------- canvas


def display_size(shape: Tuple[int, int], lo: int = DISPLAY_MIN, hi: int = DISPLAY_MAX) -> Tuple[int, int]:
    """(h, w) at which the canvas shows an (H, W) photo: the aspect ratio kept, the long side
    brought into [lo, hi] (a 64-px face is drawn on at 512 px, a 4000-px photo at 1024 px).

    >>> display_size((64, 64)), display_size((3000, 4000)), display_size((600, 800))
    ((512, 512), (768, 1024), (600, 800))
    """
    H, W = shape
    long = max(H, W)
    scale = lo / long if long < lo else hi / long if long > hi else 1.0
    return max(1, round(H * scale)), max(1, round(W * scale))


def canvas_background(rgb: np.ndarray) -> np.ndarray:
    """The uint8 (h, w, 3) photo as the canvas shows it (`display_size`; nearest when enlarging,
    so a small face's pixels stay visible, area when shrinking)."""
    import cv2

    h, w = display_size(rgb.shape[:2])
    if (h, w) == rgb.shape[:2]:
        return rgb
    interp = cv2.INTER_NEAREST if h > rgb.shape[0] else cv2.INTER_AREA
    return cv2.resize(rgb, (w, h), interpolation=interp)


def layer_planes(value: Optional[Dict[str, Any]], names: Sequence[str] = ("mask", "strokes")) -> List[np.ndarray]:
    """The uint8 (h, w) alpha of each named layer of a `gr.ImageEditor` value ({"background",
    "layers", "composite"}, RGBA numpy), in the order of `names` (the editor's layer order); an
    absent or empty layer gives zeros."""
    if not value or value.get("background") is None:
        raise Problem("no photo: upload one (or pick an example) first")
    background = np.asarray(value["background"])
    shape = background.shape[:2]
    layers = list(value.get("layers") or [])
    planes = []
    for i, _ in enumerate(names):
        layer = None if i >= len(layers) or layers[i] is None else np.asarray(layers[i])
        if layer is None or layer.ndim != 3 or layer.shape[2] != 4:
            planes.append(np.zeros(shape, np.uint8))
        else:
            planes.append(np.ascontiguousarray(layer[:, :, 3]))
    return planes


def read_canvas(value: Optional[Dict[str, Any]], photo_shape: Tuple[int, int], threshold: float = 0.5):
    """(bool (H, W) mask, uint8 (H, W) dark-on-white strokes, notes) at the photo's (H, W) from the
    editor's layers: the mask layer's alpha >= `threshold` (`photo_io.mask_from_plane`), the
    strokes layer's opaque pixels as ink (`photo_io.layer_ink`). Problem for no photo or no mask."""
    mask_alpha, stroke_alpha = layer_planes(value)
    check_aspect("the canvas", "mask layer", mask_alpha.shape, photo_shape, "the photo")
    try:
        mask = mask_from_plane(mask_alpha, photo_shape, threshold, "the mask layer")
    except InputError:
        raise Problem("no mask drawn: select the \"mask\" layer and paint the region to edit") from None
    strokes = resize_plane(layer_ink(stroke_alpha), photo_shape)
    notes = list(mask.notes)
    if not (stroke_alpha >= 128).any():
        notes.append("no strokes drawn: the region is redrawn from the sketch of its surroundings only")
    return mask.mask, strokes, notes


# --------------------------------------------------------------------------------------- faces


@dataclass
class FaceSession:
    """What the face tab edits with: the iLAT `edit.Editor`, a Taming baseline model (or None),
    the read options (pixel limit, region rule) and example photos (paths)."""

    editor: Any
    baseline: Any = None
    options: Any = None
    examples: List[str] = field(default_factory=list)


@dataclass
class MethodResult:
    """One method's edit: the uint8 (H, W, 3) result at the photo's size, its seconds and tokens."""

    name: str
    image: np.ndarray
    seconds: float
    tokens: int
    total_tokens: int


def edit_photo(session: FaceSession, photo: np.ndarray, mask: np.ndarray, lines: np.ndarray,
               complete_sketch: bool = False, sampling: Optional[Dict[str, Any]] = None, notes: Sequence[str] = (),
               progress=None):
    """(`edit.EditInputs`, [MethodResult]) for the photo uint8 (H, W, 3), bool (H, W) mask and uint8
    (H, W) lines: Taming and Taming* with a baseline, then iLAT, each pasted back at the photo's size."""
    from ilat_ext.apps import edit

    editor = session.editor
    inputs = edit.prepare_arrays(photo, mask, lines, editor.size, editor.sketch_style, complete_sketch,
                                 session.options, notes)
    sampling = dict(sampling or {})
    runs = [("iLAT", editor.model, "local")]
    if session.baseline is not None:
        runs = [("Taming", session.baseline, "edit"), ("Taming*", session.baseline, "local")] + runs
    results = []
    for k, (name, model, mode) in enumerate(runs):
        if progress is not None:
            progress(k / len(runs), desc=f"sampling {name}")
        start = time.perf_counter()
        result = edit.edit_faces(model, inputs.x, inputs.mask, inputs.sketch,
                                 "taming" if mode == "edit" else "local", **sampling)
        image = edit.paste_results(inputs, result.image.cpu())[0]
        results.append(MethodResult(name, image, time.perf_counter() - start, int(result.token_mask.sum()),
                                    int(result.token_mask[0].numel())))
    return inputs, results


def results_table(results: Sequence[MethodResult]) -> str:
    """A markdown table: per method the seconds taken and the tokens regenerated."""
    rows = ["| method | seconds | tokens regenerated |", "|---|---|---|"]
    rows += [f"| {r.name} | {r.seconds:.2f} | {r.tokens} of {r.total_tokens} ({r.tokens / r.total_tokens:.0%}) |"
             for r in results]
    return "\n".join(rows)


def toy_examples(size: int, n: int = 4, folder: Optional[str] = None) -> List[str]:
    """Paths of `n` held-out ToyFaces faces (the test split) written as PNGs, for the example picker."""
    from ilat_ext.apps.image_io import write_rgb
    from ilat_ext.data import ToyFaces

    folder = folder or tempfile.mkdtemp(prefix="ilat_editor_examples_")
    faces = ToyFaces(size=size, length=n, split="test", mask=False, sketch=False)
    paths = []
    for i in range(n):
        image = np.clip(np.rint((faces[i]["image"] + 1.0) * 127.5), 0, 255).astype(np.uint8)
        paths.append(os.path.join(folder, f"held_out_face_{i}.png"))
        write_rgb(paths[-1], image)
    return paths


def sampling_from_controls(greedy: bool, temperature, top_k, seed) -> Dict[str, Any]:
    """The samplers' keywords from the page's controls (Problem for values out of range)."""
    if not greedy:
        if temperature is None or not float(temperature) > 0:
            raise Problem(f"temperature must be positive, got {temperature}")
        if top_k is not None and top_k != "" and int(top_k) < 1:
            raise Problem(f"top-k must be at least 1, got {top_k}")
    top_k = None if top_k in (None, "", 0) else int(top_k)
    seed = None if seed in (None, "") else int(seed)
    return {"greedy": bool(greedy), "temperature": float(temperature or 1.0), "top_k": top_k, "seed": seed}


# ---------------------------------------------------------------------------------------- poses


@dataclass
class PoseSession:
    """What the pose tab synthesizes with: a `pose_guide.PoseRun`, a Taming pose baseline model (or None)."""

    run: Any
    baseline: Any = None
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS


def toy_pair(size: int, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3) reference, its pose, the target pose) of held-out toy pair `index`."""
    from ilat_ext.data.toy_pose import ToyPoses

    if index is None or not 0 <= int(index) < 64:
        raise Problem(f"toy pair must be in 0..63, got {index}")
    pair = ToyPoses(size=size, length=int(index) + 1, split="test")[int(index)]
    reference = np.clip(np.rint((pair["cond_image"] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return reference, np.asarray(pair["cond_pose_px"], np.float32), np.asarray(pair["pose_px"], np.float32)


def synthesize_pose(session: PoseSession, photo: np.ndarray, ref_pose: np.ndarray, target_pose: np.ndarray,
                    sampling: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The reference photo uint8 (H, W, 3) redrawn in the target pose (both poses (13, 3) in the
    photo's pixels): {"result" (H, W, 3) at the photo's size, "mask" (H, W) bool union mask,
    "warped" model-size warped reference or None, "Taming" result or absent, "seconds", "tokens"}."""
    from ilat_ext.apps import pose_guide as pg
    from ilat_ext.apps.image_io import tensor_to_uint8, uint8_to_tensor
    from ilat_ext.data.pose import resize_image, resize_pose

    run = session.run
    H, W = photo.shape[:2]
    reference = uint8_to_tensor(resize_image(photo, run.size, run.resize))
    ref = resize_pose(ref_pose, H, W, run.size, run.resize)
    tgt = resize_pose(target_pose, H, W, run.size, run.resize)
    sampling = dict(sampling or {})
    start = time.perf_counter()
    frames, masks = pg.synthesize_sequence(run.model, reference, ref, [tgt], **sampling)
    seconds = time.perf_counter() - start
    images, full_masks = pg.paste_into_photo(frames, photo, masks, run.resize)
    out = {"result": images[0], "mask": full_masks[0], "seconds": seconds,
           "tokens": int(run.model.token_mask(frames, masks).sum()) if hasattr(run.model, "token_mask") else None,
           "warped": None, "reference_pose": pg.skeleton_overlay(photo, ref_pose),
           "target_pose": pg.skeleton_overlay(photo, target_pose)}
    if getattr(run.model, "warp_reference", False):
        warped = run.model.condition_image_px(reference, ref, [tgt]).float().cpu()
        out["warped"] = tensor_to_uint8(warped)[0]
    if session.baseline is not None:
        taming, tmasks = pg.synthesize_sequence(session.baseline, reference, ref, [tgt], mode="edit", **sampling)
        out["Taming"] = pg.paste_into_photo(taming, photo, tmasks, run.resize)[0][0]
    return out


# ------------------------------------------------------------------------------------------ app


def _message(text: str, kind: str = "ok") -> str:
    mark = {"ok": "", "error": "**Error:** ", "note": ""}[kind]
    return f"{mark}{text}"


def _guard(fn, n_outputs: int, status_index: int):
    """`fn` whose Problem / InputError / ValueError / OSError (and any other exception, logged with
    its traceback on the server) becomes a message in the status box; the other outputs unchanged."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Problem, ValueError, OSError) as e:
            text = str(e)
        except Exception as e:  # noqa: BLE001 - the server must keep serving
            logger.exception("request failed")
            text = f"internal error ({type(e).__name__}: {e}); the server keeps serving"
        outs = [gr.update() for _ in range(n_outputs)]
        outs[status_index] = _message(text.splitlines()[0] if text else "bad request", "error")
        return tuple(outs)
    return wrapped


def _face_tab(gr, session: Optional[FaceSession], max_pixels: Optional[int]):
    if session is None:
        gr.Markdown("No face-editing run loaded: start `ilat-editor --run logs/<ilat run>` (or `--demo DIR`).")
        return
    editor = session.editor
    gr.Markdown(f"**{os.path.basename(editor.run.rstrip('/'))}** ({type(editor.model).__name__}, {editor.size} px"
                + (", with a Taming baseline" if session.baseline is not None else "") + "). Upload a photo, paint "
                "the region to edit on the **mask** layer (layers: bottom right of the canvas) and the lines to follow on "
                "the **strokes** layer (the black brush: the colour button), click **Edit**. Brush, eraser, undo "
                "and zoom are in the canvas's toolbars.")
    photo_state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            photo_file = gr.File(label="photo (JPEG, PNG, WebP, BMP, TIFF)", file_types=["image"], type="filepath",
                                 elem_id="photo_file", **FILE)
            if session.examples:
                gr.Examples(examples=[[p] for p in session.examples], inputs=[photo_file],
                            label="held-out faces of the run's data")
            sketch_file = gr.File(label="optional: a complete condition sketch instead of XDoG + strokes",
                                  file_types=["image"], type="filepath", elem_id="sketch_file", **FILE)
            with gr.Accordion("sampling", open=False):
                greedy = gr.Checkbox(True, label="greedy (top-1; the paper's default)", elem_id="greedy")
                temperature = gr.Number(1.0, label="temperature", elem_id="temperature")
                top_k = gr.Number(None, label="top-k (empty: all codes)", precision=0, elem_id="top_k")
                seed = gr.Number(None, label="seed (empty: random)", precision=0, elem_id="seed")
        with gr.Column(scale=2):
            canvas = gr.ImageEditor(label="draw: mask layer = where, strokes layer = what", type="numpy",
                                    image_mode="RGBA", sources=(), elem_id="canvas",
                                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask", "strokes"]),
                                    # the mask in see-through red (alpha 0.6 >= the half that counts),
                                    # strokes in black; any colour works on either layer
                                    brush=gr.Brush(default_size=12, colors=[MASK_COLOR, "#000000", "#ffffff"],
                                                   default_color=MASK_COLOR),
                                    transforms=(), height=560, canvas_size=(512, 512))
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
    status = gr.Markdown("", elem_id="face_status")
    with gr.Row():
        shown_input = gr.Image(label="input", format="png", interactive=False, elem_id="shown_input", **SHOWN)
        shown_mask = gr.Image(label="mask (at the photo's size)", format="png", interactive=False,
                              elem_id="shown_mask", **SHOWN)
        shown_sketch = gr.Image(label="condition sketch the model received", format="png", interactive=False,
                                elem_id="shown_sketch", **SHOWN)
    names = FACE_METHODS if session.baseline is not None else ("iLAT",)
    with gr.Row():
        method_images = [gr.Image(label=f"{name} (the photo's size)", format="png", interactive=False,
                                  **SAVED, elem_id=f"result_{name.replace('*', '_star').lower()}")
                         for name in names]
    table = gr.Markdown("", elem_id="face_table")

    def load_photo(path):
        if path is None:
            return None, None, ""
        photo = read_photo(path, "photo", max_pixels)
        h, w = photo.shape
        value = {"background": canvas_background(photo.rgb), "layers": [], "composite": None}
        notes = photo.notes + [f"photo {w}x{h} loaded; paint the mask layer"]
        return photo.rgb, value, _message("; ".join(notes))

    def run_edit(photo, value, sketch_path, greedy_, temperature_, top_k_, seed_, progress=gr.Progress()):
        if photo is None:
            raise Problem("no photo: upload one (or pick an example) first")
        sampling = sampling_from_controls(greedy_, temperature_, top_k_, seed_)
        mask, lines, notes = read_canvas(value, photo.shape[:2])
        complete = sketch_path is not None
        if complete:
            from ilat_ext.apps.photo_io import read_strokes
            sketch = read_strokes(sketch_path, photo.shape[:2], "the photo", "auto", "sketch", max_pixels)
            lines, notes = sketch.sketch, notes + sketch.notes
        inputs, results = edit_photo(session, photo, mask, lines, complete, sampling, notes, progress)
        from ilat_ext.apps.image_io import tensor_to_uint8
        condition = tensor_to_uint8(inputs.sketch, rgb=True)[0]
        mask_image = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 3, axis=2)
        images = [r.image for r in results]
        return (photo, mask_image, condition, *images, results_table(results),
                _message("; ".join([f"edited: {results[-1].tokens} tokens regenerated by iLAT"]
                                   + [n for n in inputs.notes if n.startswith(("warning", "no strokes"))])))

    photo_file.change(_guard(load_photo, 3, 2), [photo_file], [photo_state, canvas, status])
    outputs = [shown_input, shown_mask, shown_sketch, *method_images, table, status]
    edit_button.click(_guard(run_edit, len(outputs), len(outputs) - 1),
                      [photo_state, canvas, sketch_file, greedy, temperature, top_k, seed], outputs,
                      concurrency_id="model")


def _pose_tab(gr, session: Optional[PoseSession]):
    if session is None:
        gr.Markdown("No pose run loaded: start `ilat-editor --pose_run logs/<pose run>` (or `--demo DIR` "
                    "of the pose demo).")
        return
    run = session.run
    gr.Markdown(f"**{os.path.basename(run.run.rstrip('/'))}** ({run.size} px). A reference image with its pose "
                "(a JSON file of 13 [x, y, visibility] in its pixels) and a target pose (JSON), or a held-out toy "
                "pair; **Synthesize** redraws the person in the target pose inside the union of both poses' masks. "
                "(Dragging joints is not offered: poses come from files or pairs.)")
    state = gr.State(None)
    with gr.Row():
        with gr.Column():
            ref_file = gr.File(label="reference image", file_types=["image"], type="filepath", elem_id="pose_ref",
                               **FILE)
            ref_json = gr.File(label="reference pose (JSON)", file_types=[".json"], type="filepath",
                               elem_id="pose_ref_json", **FILE)
            target_json = gr.File(label="target pose (JSON)", file_types=[".json"], type="filepath",
                                  elem_id="pose_target_json", **FILE)
            with gr.Row():
                pair_index = gr.Number(0, label="toy pair (held out)", precision=0, elem_id="pose_pair")
                pair_button = gr.Button("use toy pair", elem_id="pose_use_pair")
            go = gr.Button("Synthesize", variant="primary", elem_id="pose_go")
        with gr.Column():
            ref_shown = gr.Image(label="reference with its pose", format="png", interactive=False, **SHOWN)
            target_shown = gr.Image(label="target pose", format="png", interactive=False, **SHOWN)
    status = gr.Markdown("", elem_id="pose_status")
    with gr.Row():
        result_image = gr.Image(label="iLAT (the reference's size)", format="png", interactive=False,
                                **SAVED, elem_id="pose_result")
        baseline_image = gr.Image(label="Taming", format="png", interactive=False, **SAVED,
                                  visible=session.baseline is not None)
        mask_image = gr.Image(label="union mask", format="png", interactive=False, elem_id="pose_mask", **SHOWN)
        warped_image = gr.Image(label="warped reference (the model's condition)", format="png", interactive=False,
                                **SHOWN)

    def from_files(ref_path, ref_pose_path, target_pose_path):
        from ilat_ext.apps import pose_guide as pg

        if ref_path is None or ref_pose_path is None or target_pose_path is None:
            raise Problem("give the reference image, its pose and the target pose (or use a toy pair)")
        photo = read_photo(ref_path, "reference image", session.max_pixels, min_side=run.size)
        h, w = photo.shape
        return photo.rgb, pg.read_pose(ref_pose_path, h, w), pg.read_pose(target_pose_path, h, w)

    def synthesize(current, ref_path, ref_pose_path, target_pose_path):
        if ref_path is not None or ref_pose_path is not None or target_pose_path is not None or current is None:
            current = from_files(ref_path, ref_pose_path, target_pose_path)
        photo, ref_pose, target_pose = current
        out = synthesize_pose(session, photo, ref_pose, target_pose)
        mask = np.repeat((out["mask"].astype(np.uint8) * 255)[:, :, None], 3, axis=2)
        tokens = "" if out["tokens"] is None else f", {out['tokens']} tokens regenerated"
        return (current, out["reference_pose"], out["target_pose"], out["result"], out.get("Taming"), mask,
                out["warped"], _message(f"synthesized in {out['seconds']:.2f} s{tokens}"))

    outputs = [state, ref_shown, target_shown, result_image, baseline_image, mask_image, warped_image, status]

    def pick_pair(index):
        photo, ref_pose, target_pose = toy_pair(run.size, index)
        return synthesize((photo, ref_pose, target_pose), None, None, None)

    pair_button.click(_guard(pick_pair, len(outputs), len(outputs) - 1), [pair_index], outputs,
                      concurrency_id="model")
    go.click(_guard(synthesize, len(outputs), len(outputs) - 1), [state, ref_file, ref_json, target_json],
             outputs, concurrency_id="model")


def build_app(face: Optional[FaceSession] = None, pose: Optional[PoseSession] = None,
              max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
    """The gradio Blocks: a face-editing tab and a pose tab (a message where no run of that kind is loaded)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title="iLAT editor", analytics_enabled=False) as app:
        gr.Markdown("## iLAT editor: edit a region, keep everything else")
        with gr.Tabs(selected="face" if face is not None or pose is None else "pose"):
            with gr.Tab("Face editing", id="face"):
                _face_tab(gr, face, max_pixels)
            with gr.Tab("Pose guiding", id="pose"):
                _pose_tab(gr, pose)
    app.queue(default_concurrency_limit=1, max_size=16)   # one edit at a time: a model on a CPU
    return app


def launch(app, host: str = "127.0.0.1", port: int = 7860, max_file_size: str = "25mb", block: bool = True):
    """Serve `app` on host:port (never a share link, no analytics), uploads limited to `max_file_size`."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    # system fonts: no font for the browser to fetch from anywhere (the browser tests check it)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return app.launch(server_name=host, server_port=port, share=False, max_file_size=max_file_size, theme=theme,
                      show_error=False, prevent_thread_lock=not block, quiet=True, footer_links=[],
                      ssr_mode=False, mcp_server=False, pwa=False)
