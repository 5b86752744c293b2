"""Procedural cartoon faces: a demo dataset that needs no files and no downloads.

iLAT (Cao et al., "The Image Local Autoregressive Transformer", NeurIPS 2021) edits a masked
region of a face; its experiments use CelebA-HQ and FFHQ. `ToyFaces` stands in for those so that
configs, tests and demos run anywhere: each item is a face-like portrait (background, shoulders,
head, hair, ears, eyes, eyebrows, nose, mouth, sometimes glasses, a hat, a beard) drawn with cv2
at 4x (or 2x) resolution and shrunk with INTER_AREA for anti-aliasing.

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
import colorsys
import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from ilat_ext.data.masks import free_form_mask, mask_with_mode, validate_area_range, validate_mode_probs
from ilat_ext.data.sketch import sketch_from_canvas, sketch_to_tensor_layout

SPLITS = ("train", "validation", "test")
# Arbitrary constant that keeps these streams apart from other seeded generators in the project.
_STREAM_TAG = 0x11A7
_FACE_STREAM, _MASK_STREAM = 0, 1

# Palettes are RGB. Plausible human ranges for skin/hair/eyes, with a few dyed hair colours so the
# model also sees saturated colours on the head.
SKIN_TONES = (
    (255, 224, 196), (246, 210, 180), (241, 194, 165), (234, 192, 134), (224, 172, 105),
    (198, 134, 66), (173, 120, 90), (141, 85, 36), (120, 80, 60), (92, 56, 32),
)
HAIR_COLOURS = (
    (28, 24, 24), (45, 32, 28), (70, 45, 30), (110, 70, 40), (150, 75, 40), (180, 60, 30),
    (215, 180, 110), (235, 215, 160), (150, 150, 150), (225, 225, 225),
)
DYED_HAIR_COLOURS = ((60, 90, 200), (220, 100, 160), (60, 160, 90), (140, 70, 190))
IRIS_COLOURS = ((100, 60, 30), (55, 35, 20), (70, 130, 200), (80, 140, 80), (120, 130, 140), (140, 110, 50))
LIP_TINT = (190, 70, 85)

HAIR_STYLES = ("short", "buzz", "bob", "long", "curly", "bald")
HAIR_STYLE_PROBS = (0.26, 0.1, 0.18, 0.24, 0.12, 0.1)
MOUTH_STYLES = ("smile", "grin", "neutral", "lips", "open")
NOSE_STYLES = ("line", "nostrils", "triangle", "button")
BACKGROUNDS = ("flat", "gradient", "corners", "blotches", "stripes")


# --------------------------------------------------------------------------------------- helpers


def _choice(rng: np.random.Generator, options, p=None):
    # One rng.random() call either way; much cheaper than rng.choice(..., p=p).
    u = rng.random()
    if p is None:
        return options[min(int(u * len(options)), len(options) - 1)]
    cumulative = 0.0
    for option, prob in zip(options, p):
        cumulative += prob
        if u < cumulative:
            return option
    return options[-1]


def _jitter(rng: np.random.Generator, colour, sigma: float = 8.0) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float64) + rng.normal(0.0, sigma, 3), 0, 255)


def _c(colour) -> Tuple[int, int, int]:
    """cv2 wants a tuple of Python ints."""
    return tuple(min(255, max(0, int(float(v) + 0.5))) for v in colour)


def _mix(a, b, t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)


def _random_colour(rng: np.random.Generator, sat=(0.2, 0.7), val=(0.45, 0.95)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b]) * 255.0


class _HeadFrame:
    """Head-centred coordinates: (u, v) in units of the head's half-axes, rotated by the tilt.

    u = -1 / +1 are the left / right edges of the head, v = -1 / +1 its top / chin, before tilt.
    """

    def __init__(self, cx: float, cy: float, a: float, b: float, tilt_deg: float):
        self.cx, self.cy, self.a, self.b, self.tilt = cx, cy, a, b, tilt_deg
        t = math.radians(tilt_deg)
        self.cos, self.sin = math.cos(t), math.sin(t)

    def xy(self, u: float, v: float) -> Tuple[float, float]:
        du, dv = u * self.a, v * self.b
        return self.cx + self.cos * du - self.sin * dv, self.cy + self.sin * du + self.cos * dv

    def pt(self, u: float, v: float) -> Tuple[int, int]:
        x, y = self.xy(u, v)
        return int(round(x)), int(round(y))

    def poly(self, uv) -> np.ndarray:
        return np.array([self.pt(u, v) for u, v in uv], np.int32)

    def ellipse(self, img, u, v, au, bv, colour, thickness=-1, start=0, end=360, extra_angle=0.0):
        """Ellipse centred at (u, v) with half-axes (au * a, bv * b), aligned with the head."""
        axes = (max(1, int(round(au * self.a))), max(1, int(round(bv * self.b))))
        cv2.ellipse(img, self.pt(u, v), axes, self.tilt + extra_angle, start, end, _c(colour), thickness)

    def arc_points(self, u, v, au, bv, start, end, delta=10) -> np.ndarray:
        axes = (max(1, int(round(au * self.a))), max(1, int(round(bv * self.b))))
        return cv2.ellipse2Poly(self.pt(u, v), axes, int(round(self.tilt)), int(start), int(end), delta)


# ------------------------------------------------------------------------------------- drawing


def _draw_background(rng: np.random.Generator, canvas_size: int) -> Tuple[np.ndarray, str]:
    style = _choice(rng, BACKGROUNDS)
    base = _random_colour(rng)
    if style == "flat":
        small = base[None, None, :]
    elif style == "gradient":
        other = _mix(base, _random_colour(rng), rng.uniform(0.3, 0.8))
        small = np.stack([base, other])[:, None, :]  # (2, 1, 3): top to bottom
    elif style == "corners":
        small = np.stack([_jitter(rng, base, 45) for _ in range(4)]).reshape(2, 2, 3)
    elif style == "blotches":
        n = int(rng.integers(3, 7))
        small = np.clip(base + rng.normal(0, 25, (n, n, 1)) + rng.normal(0, 10, (n, n, 3)), 0, 255)
    else:  # stripes
        other = _jitter(rng, base, 40)
        n = int(rng.integers(3, 9))
        small = np.where((np.arange(n) % 2 == 0)[None, :, None], base, other)
    interp = {"stripes": cv2.INTER_NEAREST, "blotches": cv2.INTER_CUBIC}.get(style, cv2.INTER_LINEAR)
    # Resize in uint8 (cv2 saturates): clipping a float canvas costs more than all the drawing.
    small = np.ascontiguousarray(np.clip(np.broadcast_to(small, small.shape), 0, 255).round(), np.uint8)
    return cv2.resize(small, (canvas_size, canvas_size), interpolation=interp), style


def _draw_body(rng, img, head: _HeadFrame, skin, C: int) -> None:
    shirt = _random_colour(rng, sat=(0.1, 0.8), val=(0.2, 0.9))
    body_x = head.cx + rng.normal(0, 0.02 * C)
    shoulder_w = C * rng.uniform(0.36, 0.5)
    shoulder_h = C * rng.uniform(0.2, 0.3)
    body_y = max(head.cy + head.b * 1.05 + shoulder_h * 0.65, C * rng.uniform(0.98, 1.06))
    cv2.ellipse(img, (int(body_x), int(body_y)), (int(shoulder_w), int(shoulder_h)), 0, 0, 360, _c(shirt), -1)
    # Neck: from under the jaw straight down into the shirt, in shadow under the chin.
    neck_w = rng.uniform(0.36, 0.5)
    top_l, top_r = head.xy(-neck_w, 0.6), head.xy(neck_w, 0.6)
    neck = np.array([top_l, top_r, (top_r[0] + 0.02 * C, body_y), (top_l[0] - 0.02 * C, body_y)], np.int32)
    cv2.fillPoly(img, [neck], _c(skin * 0.82))
    neckline = _choice(rng, ("round", "v", "none"))
    top_y = body_y - shoulder_h
    half = 0.5 * (top_r[0] - top_l[0]) + 0.02 * C
    if neckline == "v":
        depth = C * rng.uniform(0.06, 0.14)
        tri = np.array([(body_x - half, top_y), (body_x + half, top_y), (body_x, top_y + depth)], np.int32)
        cv2.fillPoly(img, [tri], _c(skin * 0.82))
    elif neckline == "round":
        cv2.ellipse(img, (int(body_x), int(top_y)), (int(half), int(0.04 * C)), 0, 0, 180, _c(skin * 0.82), -1)
        cv2.ellipse(img, (int(body_x), int(top_y)), (int(half), int(0.04 * C)), 0, 0, 180,
                    _c(shirt * 0.6), max(1, C // 100))


def _hair_outline(rng, style: str) -> Dict[str, float]:
    """Shape of the hair mass around the top of the head, in head units."""
    if style == "buzz":
        return dict(dy=0.0, sx=1.02, sy=1.02)
    if style == "curly":
        return dict(dy=rng.uniform(0.08, 0.16), sx=rng.uniform(1.15, 1.3), sy=rng.uniform(1.1, 1.22))
    return dict(dy=rng.uniform(0.02, 0.08), sx=rng.uniform(1.04, 1.12), sy=rng.uniform(1.02, 1.1))


def _draw_back_hair(rng, img, head: _HeadFrame, style: str, outline, colour) -> None:
    """Hair behind the head (long, bob, curly): drawn before the neck and face."""
    dy, sx, sy = outline["dy"], outline["sx"], outline["sy"]
    if style == "curly":
        head.ellipse(img, 0, -dy, sx, sy, colour)
        r = max(2, int(0.2 * head.a))
        for ang in range(140, 401, 22):
            x, y = head.arc_points(0, -dy, sx, sy, ang, ang + 1, delta=1)[0]
            cv2.circle(img, (int(x), int(y)), int(r * rng.uniform(0.8, 1.25)), _c(colour), -1)
        return
    if style not in ("bob", "long"):
        return
    v_end = rng.uniform(0.55, 0.85) if style == "bob" else rng.uniform(1.2, 1.8)
    w_end = sx * (rng.uniform(1.0, 1.08) if style == "bob" else rng.uniform(1.05, 1.3))
    arc = head.arc_points(0, -dy, sx, sy, 180, 360)
    side = [head.pt(w_end, v_end)]
    # Ragged or straight hem.
    n_hem = 7
    hem = [head.pt(u, v_end + rng.uniform(-0.06, 0.06) * (style == "long")) for u in np.linspace(w_end, -w_end, n_hem)]
    pts = np.concatenate([arc, np.array(side + hem + [head.pt(-w_end, v_end)], np.int32)])
    cv2.fillPoly(img, [pts], _c(colour))


def _draw_ears(rng, img, head: _HeadFrame, skin, v_eye: float) -> None:
    ear_v = v_eye + rng.uniform(0.05, 0.15)
    au, bv = rng.uniform(0.14, 0.2), rng.uniform(0.17, 0.24)
    for s in (-1, 1):
        head.ellipse(img, s * 0.97, ear_v, au, bv, skin * 0.95)
        head.ellipse(img, s * 0.99, ear_v, au * 0.5, bv * 0.6, skin * 0.78)


def _draw_top_hair(rng, img, head: _HeadFrame, style: str, outline, colour, C: int) -> Dict[str, Any]:
    """Hair on the head, bounded below by a hairline; returns the hairline parameters."""
    if style == "bald":
        if rng.random() < 0.6:  # a fringe of hair at the sides
            for s in (-1, 1):
                head.ellipse(img, s * 0.93, -0.15, 0.12, 0.28, colour)
        return {"v_forehead": None}
    dy, sx, sy = outline["dy"], outline["sx"], outline["sy"]
    v_temple = rng.uniform(-0.3, -0.05)
    v_fore = rng.uniform(-0.62, -0.4) if style != "buzz" else rng.uniform(-0.7, -0.55)
    part = rng.uniform(-0.4, 0.4)  # horizontal position of the highest/lowest point
    # Exponent: large -> flat bangs that drop at the temples, small -> rounded hairline.
    power = rng.uniform(1.2, 4.0)
    theta0 = math.degrees(math.asin(float(np.clip((v_temple + dy) / sy, -1.0, 1.0))))
    arc = head.arc_points(0, -dy, sx, sy, 180 - theta0, 360 + theta0, delta=8)
    u_edge = math.cos(math.radians(theta0)) * sx
    bangs = style in ("short", "bob", "long", "curly") and rng.random() < 0.5
    teeth = rng.uniform(0.04, 0.1) if bangs or style == "curly" else 0.0
    n = 15
    hairline = []
    for k, u in enumerate(np.linspace(u_edge, -u_edge, n)):
        span = u_edge + abs(part) if u * part < 0 else u_edge - abs(part)
        d = min(1.0, abs(u - part) / max(span, 1e-3))
        v = v_fore + (v_temple - v_fore) * d ** power
        if 0 < k < n - 1 and k % 2 == 1:
            v += teeth
        hairline.append((u, v))
    pts = np.concatenate([arc, head.poly(hairline)])
    cv2.fillPoly(img, [pts], _c(colour))
    # A few strands for texture, darker than the hair.
    strand = _c(colour * 0.75)
    for _ in range(int(rng.integers(0, 5))):
        u0 = rng.uniform(-0.6, 0.6)
        cv2.line(img, head.pt(u0, -0.95), head.pt(u0 + rng.uniform(-0.2, 0.2), v_fore - 0.05), strand, max(1, C // 128))
    return {"v_forehead": v_fore}


def _draw_eyes(rng, img, head: _HeadFrame, v_eye: float, C: int) -> Dict[str, Any]:
    u_eye = rng.uniform(0.34, 0.46)
    ew = rng.uniform(0.13, 0.19)  # half-width in units of a
    eh_px = ew * head.a * rng.uniform(0.5, 0.75)
    eh = eh_px / head.b
    iris = _jitter(rng, _choice(rng, IRIS_COLOURS), 10)
    r_iris = eh_px * rng.uniform(0.85, 1.05)
    r_pupil = r_iris * rng.uniform(0.4, 0.55)
    gaze_u = rng.uniform(-0.35, 0.35) * max(0.0, ew * head.a - r_iris) / head.a
    gaze_v = rng.uniform(-0.1, 0.1) * eh
    line = max(1, int(round(C / 110)))
    closed = rng.random() < 0.06
    eye_tilt = rng.uniform(-8, 8)
    centres = []
    for s in (-1, 1):
        u, v = s * u_eye, v_eye
        centres.append(head.xy(u, v))
        if closed:
            head.ellipse(img, u, v - eh * 0.5, ew, eh, (40, 30, 30), line + 1, 20, 160, s * eye_tilt)
            continue
        head.ellipse(img, u, v, ew, eh, (246, 244, 238), -1, extra_angle=s * eye_tilt)
        iu, iv = u + gaze_u, v + gaze_v
        cv2.circle(img, head.pt(iu, iv), max(1, int(r_iris)), _c(iris), -1)
        cv2.circle(img, head.pt(iu, iv), max(1, int(r_pupil)), (15, 12, 12), -1)
        hx, hy = head.xy(iu, iv)
        glint = (int(hx + 0.35 * r_iris), int(hy - 0.35 * r_iris))
        cv2.circle(img, glint, max(1, int(0.22 * r_iris)), (255, 255, 255), -1)
        # Redraw the white's outline over the iris, and a thick upper lid, so the iris looks
        # tucked under the eyelids.
        head.ellipse(img, u, v, ew, eh, (35, 25, 25), line, 0, 360, s * eye_tilt)
        head.ellipse(img, u, v, ew * 1.03, eh * 1.05, (25, 18, 18), line * 2, 190, 350, s * eye_tilt)
    return {"u_eye": u_eye, "ew": ew, "eh": eh, "centres": centres, "closed": closed}


def _draw_eyebrows(rng, img, head: _HeadFrame, eyes, colour, C: int) -> None:
    base = eyes["v_eye"] - eyes["eh"] - rng.uniform(0.06, 0.14)
    arch = rng.uniform(0.0, 0.08)
    inner_drop = rng.uniform(-0.05, 0.06)  # >0: frowning, <0: surprised
    thick = max(1, int(round(C * rng.uniform(0.012, 0.028))))
    for s in (-1, 1):
        u0 = s * eyes["u_eye"]
        inner, outer = u0 - s * eyes["ew"] * 1.1, u0 + s * eyes["ew"] * 1.25
        pts = [(inner, base + inner_drop), (u0, base - arch), (outer, base + 0.03)]
        cv2.polylines(img, [head.poly(pts)], False, _c(colour), thick)


def _draw_nose(rng, img, head: _HeadFrame, skin, v_eye: float, C: int) -> Tuple[str, Tuple[float, float]]:
    style = _choice(rng, NOSE_STYLES)
    v_tip = v_eye + rng.uniform(0.3, 0.42)
    w = rng.uniform(0.08, 0.14)
    shade = skin * 0.72
    line = max(1, int(round(C / 100)))
    if style == "line":
        side = 1 if rng.random() < 0.5 else -1
        pts = [(side * 0.03, v_eye + 0.1), (side * w, v_tip), (-side * 0.03, v_tip + 0.04)]
        cv2.polylines(img, [head.poly(pts)], False, _c(shade), line)
    elif style == "triangle":
        cv2.fillPoly(img, [head.poly([(0, v_eye + 0.05), (w, v_tip), (-w, v_tip)])], _c(skin * 0.88))
        head.ellipse(img, 0, v_tip, w, 0.03, shade, line, 0, 180)
    elif style == "button":
        head.ellipse(img, 0, v_tip - 0.03, w * 0.8, 0.06, skin * 0.88)
    if style in ("nostrils", "button"):
        for s in (-1, 1):
            head.ellipse(img, s * w * 0.5, v_tip, 0.035, 0.02, skin * 0.45)
    return style, head.xy(0, v_tip)


def _draw_beard(rng, img, head: _HeadFrame, colour, v_eye: float) -> str:
    kind = _choice(rng, ("moustache", "beard", "goatee"), p=(0.4, 0.4, 0.2))
    if kind == "beard":
        v_top = v_eye + rng.uniform(0.46, 0.56)
        theta = math.degrees(math.asin(float(np.clip(v_top / 1.04, -1, 1))))
        arc = head.arc_points(0, 0, 1.02, 1.04, theta, 180 - theta, delta=10)
        cv2.fillPoly(img, [arc], _c(colour))
    elif kind == "goatee":
        head.ellipse(img, 0, 0.85, 0.2, 0.16, colour)
    return kind


def _draw_mouth(rng, img, head: _HeadFrame, skin, v_eye: float, C: int, moustache_colour=None) -> Dict[str, Any]:
    """The mouth, drawn bold: 0.6-1 head half-widths wide with strokes of ~1.6 output pixels, so that
    its style (smile, grin, neutral, lips, open) survives a 16 x 16 token grid at 64 px and the
    sketch-guided edits of the demo have something visible to change."""
    style = _choice(rng, MOUTH_STYLES)
    v_m = v_eye + rng.uniform(0.58, 0.7)
    mw = rng.uniform(0.3, 0.5)
    lip = _mix(skin, _jitter(rng, LIP_TINT, 20), rng.uniform(0.5, 0.85))
    dark = _mix(lip, (40, 10, 15), 0.7)
    line = max(1, int(round(C / 40)))
    h = 0.08
    if style == "smile":
        h = rng.uniform(0.08, 0.16)
        head.ellipse(img, 0, v_m - h, mw, h, dark, line + 1, 10, 170)
    elif style == "grin":
        h = rng.uniform(0.14, 0.2)
        head.ellipse(img, 0, v_m - h * 0.3, mw, h, (90, 25, 35), -1, 0, 180)
        head.ellipse(img, 0, v_m - h * 0.3, mw * 0.9, h * 0.45, (245, 245, 240), -1, 0, 180)
        head.ellipse(img, 0, v_m - h * 0.3, mw, h, lip, line, 0, 180)
        cv2.line(img, head.pt(-mw, v_m - h * 0.3), head.pt(mw, v_m - h * 0.3), _c(lip), line)
    elif style == "neutral":
        h = rng.uniform(0.05, 0.08)
        head.ellipse(img, 0, v_m, mw, h, lip)
        cv2.line(img, head.pt(-mw, v_m), head.pt(mw, v_m), _c(dark), line)
    elif style == "lips":
        h = rng.uniform(0.08, 0.12)
        head.ellipse(img, 0, v_m, mw, h, lip, -1, 180, 360)
        head.ellipse(img, 0, v_m, mw * 0.9, h * 1.3, lip * 0.95, -1, 0, 180)
        cv2.line(img, head.pt(-mw, v_m), head.pt(mw, v_m), _c(dark), line)
    else:  # open: surprised "o"
        mw = mw * 0.5
        h = rng.uniform(0.1, 0.16)
        head.ellipse(img, 0, v_m, mw, h, (90, 25, 35))
        head.ellipse(img, 0, v_m, mw, h, lip, line)
    if moustache_colour is not None:
        thick = max(2, int(C * 0.03))
        head.ellipse(img, 0, v_m - h - 0.02, mw * 0.95, 0.06, moustache_colour, thick, 190, 350)
    corners = [head.xy(u, v) for u in (-mw, mw) for v in (v_m - h - 0.02, v_m + h + 0.02)]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    return {"style": style, "box": (min(xs), min(ys), max(xs), max(ys))}


def _draw_glasses(rng, img, head: _HeadFrame, eyes, C: int) -> str:
    kind = "sunglasses" if rng.random() < 0.25 else "glasses"
    frame = _c(_random_colour(rng, sat=(0.0, 0.6), val=(0.05, 0.5)))
    thick = max(1, int(round(C * rng.uniform(0.008, 0.016))))
    r_u = eyes["ew"] * rng.uniform(1.35, 1.6)
    r_v = r_u * head.a / head.b * rng.uniform(0.75, 1.0)
    for s in (-1, 1):
        u = s * eyes["u_eye"]
        if kind == "sunglasses":
            head.ellipse(img, u, eyes["v_eye"], r_u, r_v, (25, 25, 35))
        head.ellipse(img, u, eyes["v_eye"], r_u, r_v, frame, thick)
        cv2.line(img, head.pt(u + s * r_u, eyes["v_eye"]), head.pt(s * 1.0, eyes["v_eye"] - 0.02), frame, thick)
    bridge = (head.pt(-eyes["u_eye"] + r_u, eyes["v_eye"]), head.pt(eyes["u_eye"] - r_u, eyes["v_eye"]))
    cv2.line(img, *bridge, frame, thick)
    return kind


def _draw_hat(rng, img, head: _HeadFrame, C: int) -> None:
    colour = _random_colour(rng, sat=(0.3, 0.9), val=(0.3, 0.9))
    v_band = rng.uniform(-0.6, -0.45)
    theta0 = math.degrees(math.asin(float(np.clip((v_band + 0.05) / 1.1, -1, 1))))
    arc = head.arc_points(0, -0.05, 1.1, 1.1, 180 - theta0, 360 + theta0, delta=8)
    cv2.fillPoly(img, [arc], _c(colour))
    band = head.poly([(-1.12, v_band - 0.12), (1.12, v_band - 0.12), (1.12, v_band + 0.02), (-1.12, v_band + 0.02)])
    cv2.fillPoly(img, [band], _c(colour * 0.7))
    if rng.random() < 0.5:  # pompom
        cv2.circle(img, head.pt(0, -1.18), max(2, int(0.16 * head.a)), _c(_jitter(rng, colour, 50)), -1)


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

    img, background = _draw_background(rng, C)
    a = C * rng.uniform(0.2, 0.26)
    b = a * rng.uniform(1.15, 1.35)
    head = _HeadFrame(
        cx=C * (0.5 + rng.uniform(-0.05, 0.05)),
        cy=C * (0.47 + rng.uniform(-0.04, 0.04)),
        a=a, b=b, tilt_deg=rng.uniform(-9, 9),
    )
    skin = _jitter(rng, _choice(rng, SKIN_TONES), 7)
    if rng.random() < 0.05:
        hair = _jitter(rng, _choice(rng, DYED_HAIR_COLOURS), 15)
    else:
        hair = _jitter(rng, _choice(rng, HAIR_COLOURS), 10)
    style = _choice(rng, HAIR_STYLES, p=HAIR_STYLE_PROBS)
    outline = _hair_outline(rng, style)
    v_eye = rng.uniform(-0.12, 0.04)
    accessories = []

    _draw_body(rng, img, head, skin, C)
    _draw_back_hair(rng, img, head, style, outline, hair * 0.85)
    if style not in ("long", "curly") or rng.random() < 0.3:
        _draw_ears(rng, img, head, skin, v_eye)
    if rng.random() < 0.5:
        # Shadowed head with a lit ellipse shifted to one side: a crescent of shade for volume.
        side = 1 if rng.random() < 0.5 else -1
        head.ellipse(img, 0, 0, 1, 1, skin * 0.9)
        head.ellipse(img, side * 0.08, -0.02, 0.92, 0.97, skin)
    else:
        head.ellipse(img, 0, 0, 1, 1, skin)
    if rng.random() < 0.2:
        blush = _mix(skin, (235, 120, 130), 0.3)
        for s in (-1, 1):
            head.ellipse(img, s * 0.55, v_eye + 0.35, 0.16, 0.09, blush)
        accessories.append("blush")
    beard_colour = hair if style != "bald" or rng.random() < 0.5 else _jitter(rng, HAIR_COLOURS[1])
    facial_hair = _draw_beard(rng, img, head, beard_colour, v_eye) if rng.random() < 0.16 else None
    if facial_hair is not None:
        accessories.append(facial_hair)
    hat = rng.random() < 0.1
    if not hat:
        _draw_top_hair(rng, img, head, style, outline, hair, C)
    eyes = _draw_eyes(rng, img, head, v_eye, C)
    eyes["v_eye"] = v_eye
    brow_colour = hair * 0.7 if style != "bald" else beard_colour * 0.8
    _draw_eyebrows(rng, img, head, eyes, brow_colour, C)
    nose_style, nose_tip = _draw_nose(rng, img, head, skin, v_eye, C)
    mouth = _draw_mouth(rng, img, head, skin, v_eye, C, beard_colour if facial_hair == "moustache" else None)
    if rng.random() < 0.15:
        accessories.append(_draw_glasses(rng, img, head, eyes, C))
    if hat:
        _draw_hat(rng, img, head, C)
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
        "skin": _c(skin),
        "hair_colour": _c(hair),
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
            (see `ilat_ext.data.masks.mask_with_mode`).
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
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
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
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an integer, got {index!r}")
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for ToyFaces of length {self.length}")
        return index

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
