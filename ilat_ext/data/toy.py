"""Procedural cartoon faces: a demo dataset that needs no files and no downloads.

iLAT (Cao et al., "The Image Local Autoregressive Transformer", NeurIPS 2021) edits a masked
region of a face; its experiments use CelebA-HQ and FFHQ. `ToyFaces` stands in for those so that
configs, tests and demos run anywhere: each item is a face-like portrait (background, shoulders,
head, hair, ears, eyes, eyebrows, nose, mouth, sometimes glasses, a hat, a beard) drawn with cv2
at 4x (or 2x) resolution and shrunk with INTER_AREA for anti-aliasing. The painting of each
part lives in `ilat_ext.data.toy_face_drawing`; here the parts are composed into a face.

Item `i` is a pure function of `(seed, split, i)`: its generator is
`np.random.default_rng([_STREAM_TAG, seed, split_id, i, stream])`, so it is identical across calls,
processes and DataLoader workers, and the three splits never share a face. Faces and masks use
separate streams, so switching masks on or off (or changing their settings) leaves the faces alone.

`make_face(rng, size)` is the drawing function on its own, for sketch extraction and editing
demos; with `return_params=True` it also says where it put the eyes, nose and mouth.

With `sketch=True` items also carry the face's XDoG sketch. It is computed from the supersampled
drawing (256 px for a 64-px face) with the release's XDoG constants and shrunk like the face,
i.e. the release's pipeline (XDoG at source resolution, then resize) with the drawing as the
source; see `ilat_ext.data.sketch.sketch_from_canvas` for why not XDoG on the 64-px face itself.
The sketch is a function of the face alone, so it is as deterministic as the face.
"""
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from ilat_ext.data.checks import check_item_index, check_seed
from ilat_ext.data.mask_shapes import free_form_mask, mask_with_mode, validate_area_range, validate_mode_probs
from ilat_ext.data.sketch import sketch_from_canvas, sketch_to_tensor_layout
from ilat_ext.data.toy_face_drawing import (
    DYED_HAIR_COLOURS, HAIR_COLOURS, HAIR_STYLE_PROBS, HAIR_STYLES, SKIN_TONES, HeadFrame, draw_back_hair,
    draw_background, draw_beard, draw_body, draw_ears, draw_eyebrows, draw_eyes, draw_glasses, draw_hat, draw_mouth,
    draw_nose, draw_top_hair, hair_outline, jitter, mix, pick, rgb,
)
# The rest of the palettes and styles, importable from here as before the drawing moved out.
from ilat_ext.data.toy_face_drawing import BACKGROUNDS, IRIS_COLOURS, LIP_TINT, MOUTH_STYLES, NOSE_STYLES  # noqa: F401

SPLITS = ("train", "validation", "test")
# Arbitrary constant that keeps these streams apart from other seeded generators in the project.
_STREAM_TAG = 0x11A7
_FACE_STREAM, _MASK_STREAM = 0, 1


# ---------------------------------------------------------------------------------------- faces


def make_face(
    rng: np.random.Generator, size: int = 64, return_params: bool = False
) -> Union[np.ndarray, Tuple[np.ndarray, Dict[str, Any]]]:
    """Draw one random cartoon portrait.

    Args:
        rng: the only source of randomness; the face is a function of its state.
        size: output side in pixels (any integer >= 16; `ToyFaces` restricts it further).
        return_params: also return where things are.

    Returns:
        image: (size, size, 3) uint8 RGB.
        params (if `return_params`): a dict in output-pixel coordinates (x right, y down):
            "head_center" (x, y), "head_axes" (half-width, half-height), "tilt_deg",
            "eye_centers" [(x, y) of the image-left eye, (x, y) of the image-right eye],
            "eye_radius" (half-width of an eye), "nose_tip" (x, y),
            "mouth_box" (x0, y0, x1, y1), and the styles drawn: "background", "hair_style",
            "nose_style", "mouth_style", "accessories" (subset of glasses/sunglasses/hat/
            moustache/beard/goatee/blush), plus "skin", "hair_colour", "eyes_closed".
    """
    image, _, params = _render_face(rng, size)
    return (image, params) if return_params else image


def _render_face(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """`make_face`'s drawing: (image (size, size, 3) uint8, canvas (ss*size, ss*size, 3) uint8, params).

    `canvas` is the supersampled drawing before the INTER_AREA shrink and the film grain; the
    sketch of a toy face is computed from it (see `ilat_ext.data.sketch.sketch_from_canvas`).
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    ss = 4 if size <= 64 else 2  # supersampling factor
    C = size * ss

    img, background = draw_background(rng, C)
    a = C * rng.uniform(0.2, 0.26)
    b = a * rng.uniform(1.15, 1.35)
    head = HeadFrame(
        cx=C * (0.5 + rng.uniform(-0.05, 0.05)),
        cy=C * (0.47 + rng.uniform(-0.04, 0.04)),
        a=a, b=b, tilt_deg=rng.uniform(-9, 9),
    )
    skin = jitter(rng, pick(rng, SKIN_TONES), 7)
    if rng.random() < 0.05:
        hair = jitter(rng, pick(rng, DYED_HAIR_COLOURS), 15)
    else:
        hair = jitter(rng, pick(rng, HAIR_COLOURS), 10)
    style = pick(rng, HAIR_STYLES, p=HAIR_STYLE_PROBS)
    outline = hair_outline(rng, style)
    v_eye = rng.uniform(-0.12, 0.04)
    accessories = []

    draw_body(rng, img, head, skin, C)
    draw_back_hair(rng, img, head, style, outline, hair * 0.85)
    if style not in ("long", "curly") or rng.random() < 0.3:
        draw_ears(rng, img, head, skin, v_eye)
    if rng.random() < 0.5:
        # Shadowed head with a lit ellipse shifted to one side: a crescent of shade for volume.
        side = 1 if rng.random() < 0.5 else -1
        head.ellipse(img, 0, 0, 1, 1, skin * 0.9)
        head.ellipse(img, side * 0.08, -0.02, 0.92, 0.97, skin)
    else:
        head.ellipse(img, 0, 0, 1, 1, skin)
    if rng.random() < 0.2:
        blush = mix(skin, (235, 120, 130), 0.3)
        for s in (-1, 1):
            head.ellipse(img, s * 0.55, v_eye + 0.35, 0.16, 0.09, blush)
        accessories.append("blush")
    beard_colour = hair if style != "bald" or rng.random() < 0.5 else jitter(rng, HAIR_COLOURS[1])
    facial_hair = draw_beard(rng, img, head, beard_colour, v_eye) if rng.random() < 0.16 else None
    if facial_hair is not None:
        accessories.append(facial_hair)
    hat = rng.random() < 0.1
    if not hat:
        draw_top_hair(rng, img, head, style, outline, hair, C)
    eyes = draw_eyes(rng, img, head, v_eye, C)
    eyes["v_eye"] = v_eye
    brow_colour = hair * 0.7 if style != "bald" else beard_colour * 0.8
    draw_eyebrows(rng, img, head, eyes, brow_colour, C)
    nose_style, nose_tip = draw_nose(rng, img, head, skin, v_eye, C)
    mouth = draw_mouth(rng, img, head, skin, v_eye, C, beard_colour if facial_hair == "moustache" else None)
    if rng.random() < 0.15:
        accessories.append(draw_glasses(rng, img, head, eyes, C))
    if hat:
        draw_hat(rng, img, head, C)
        accessories.append("hat")

    canvas = img
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    # Film grain so flat regions are not perfectly flat.
    grain = rng.uniform(0.0, 4.0)
    if grain > 0.5:
        noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(grain)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)

    def out(p):
        return (float(p[0]) / ss, float(p[1]) / ss)

    params = {
        "head_center": out((head.cx, head.cy)),
        "head_axes": (head.a / ss, head.b / ss),
        "tilt_deg": head.tilt,
        "eye_centers": [out(p) for p in eyes["centres"]],
        "eye_radius": eyes["ew"] * head.a / ss,
        "eyes_closed": eyes["closed"],
        "nose_tip": out(nose_tip),
        "mouth_box": tuple(float(v) / ss for v in mouth["box"]),
        "background": background,
        "hair_style": "hat" if hat else style,
        "nose_style": nose_style,
        "mouth_style": mouth["style"],
        "accessories": accessories,
        "skin": rgb(skin),
        "hair_colour": rgb(hair),
    }
    return img, canvas, params


# ------------------------------------------------------------------------------------- dataset


class _RenderCache:
    """Rendered (face, sketch) pairs by (seed, split, index, size), least recently used out first,
    bounded in bytes. Items are a pure function of the key, so a chain of runs in one process
    (the demo trains five stages on the same faces) renders each face once; DataLoader workers
    keep caches of their own."""

    def __init__(self, max_bytes: int = 256 * 2 ** 20):
        from collections import OrderedDict
        self.max_bytes, self.bytes = int(max_bytes), 0
        self._items: "OrderedDict[tuple, Tuple[np.ndarray, Optional[np.ndarray]]]" = OrderedDict()

    def get(self, key: tuple, sketch: bool, render) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        entry = self._items.get(key)
        if entry is not None and (entry[1] is not None or not sketch):
            self._items.move_to_end(key)
            return entry
        entry = render(sketch)
        if entry[0].nbytes + (0 if entry[1] is None else entry[1].nbytes) <= self.max_bytes:
            self._put(key, entry)
        return entry

    def _put(self, key: tuple, entry) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[0].nbytes + (0 if old[1] is None else old[1].nbytes)
        self._items[key] = entry
        self.bytes += entry[0].nbytes + (0 if entry[1] is None else entry[1].nbytes)
        while self.bytes > self.max_bytes:
            _, (face, sketch) = self._items.popitem(last=False)
            self.bytes -= face.nbytes + (0 if sketch is None else sketch.nbytes)


_RENDERED = _RenderCache()


class ToyFaces(torch.utils.data.Dataset):
    """Procedural face dataset in taming's item convention.

    Items are dicts:
        "image": float32 (size, size, 3) in [-1, 1] (RGB),
        "mask": float32 (size, size, 1) in {0, 1}, 1 = region to edit (only if `mask`),
        "sketch": float32 (size, size, 1) in [-1, 1], +1 = paper, -1 = ink (only if `sketch`),
        "index": int.

    Args:
        size: image side; a multiple of 16 in [32, 256].
        length: number of items.
        seed: non-negative integer; with `split` and the index it fixes each item.
        split: "train", "validation" or "test"; the splits draw from disjoint seed streams.
        mask: add a "mask" entry.
        mask_area: (low, high) masked fraction of partial (free-form) masks.
        mask_modes: None for always-partial masks, or {"partial": p, "empty": q, "full": r}
            (see `ilat_ext.data.mask_shapes.mask_with_mode`).
        sketch: add a "sketch" entry, the XDoG sketch of the face (see `sketch_of`).
    """

    def __init__(
        self,
        size: int = 64,
        length: int = 512,
        seed: int = 0,
        split: str = "train",
        mask: bool = True,
        mask_area: Tuple[float, float] = (0.05, 0.3),
        mask_modes: Optional[Mapping[str, float]] = None,
        sketch: bool = False,
    ):
        super().__init__()
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not (32 <= size <= 256) or size % 16:
            raise ValueError(f"size must be a multiple of 16 in [32, 256], got {size!r}")
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        seed = check_seed("seed", seed)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(mask, bool):
            raise ValueError(f"mask must be True or False, got {mask!r}")
        if not isinstance(sketch, bool):
            raise ValueError(f"sketch must be True or False, got {sketch!r}")
        self.sketch = sketch
        self.size, self.length, self.seed, self.split, self.mask = int(size), int(length), int(seed), split, mask
        self.mask_area = validate_area_range(mask_area)
        self.mask_modes = None if mask_modes is None else validate_mode_probs(mask_modes)

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([_STREAM_TAG, self.seed, SPLITS.index(self.split), index, stream])

    def face(self, index: int, return_params: bool = False):
        """The uint8 (size, size, 3) face of item `index` (and its params); same as in `__getitem__`."""
        return make_face(self._rng(self._check_index(index), _FACE_STREAM), self.size, return_params)

    def sketch_of(self, index: int) -> np.ndarray:
        """The uint8 (size, size) sketch of item `index`, dark lines on white; the "sketch" entry in uint8."""
        _, canvas, _ = _render_face(self._rng(self._check_index(index), _FACE_STREAM), self.size)
        return sketch_from_canvas(canvas, self.size)

    def _check_index(self, index) -> int:
        return check_item_index(index, self.length, "ToyFaces")

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = self._check_index(index)

        def render(with_sketch: bool):
            face, canvas, _ = _render_face(self._rng(index, _FACE_STREAM), self.size)
            return face, (sketch_from_canvas(canvas, self.size) if with_sketch else None)
        face, sketch = _RENDERED.get((self.seed, self.split, index, self.size), self.sketch, render)
        item = {"image": face.astype(np.float32) / 127.5 - 1.0, "index": index}
        if self.sketch:
            item["sketch"] = sketch_to_tensor_layout(sketch)
        if self.mask:
            rng = self._rng(index, _MASK_STREAM)
            if self.mask_modes is None:
                m = free_form_mask(self.size, self.size, rng, area_range=self.mask_area)
            else:
                m = mask_with_mode(self.size, self.size, rng, mode_probs=self.mask_modes, area_range=self.mask_area)
            item["mask"] = m[:, :, None]
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, length={self.length}, seed={self.seed}, "
            f"split={self.split!r}, mask={self.mask}, mask_area={self.mask_area}, mask_modes={self.mask_modes}, "
            f"sketch={self.sketch})"
        )
