"""The painting behind `ilat_ext.data.toy`: palettes, a head-centred frame and one function per face part.

Each `draw_*` paints one part (background, body, hair, ears, eyes, eyebrows, nose, beard, mouth,
glasses, hat) onto a supersampled uint8 RGB canvas in place with cv2, in head units of a
`HeadFrame`, and takes all its randomness from the generator it is given. The parts consume the
generator in the order `ilat_ext.data.toy` calls them, so that order (and every draw in here) is
part of each face's identity: changing one changes the faces of every seed.
"""
import colorsys
import math
from typing import Any, Dict, Tuple

import cv2
import numpy as np


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


def pick(rng: np.random.Generator, options, p=None):
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


def jitter(rng: np.random.Generator, colour, sigma: float = 8.0) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float64) + rng.normal(0.0, sigma, 3), 0, 255)


def rgb(colour) -> Tuple[int, int, int]:
    """cv2 wants a tuple of Python ints."""
    return tuple(min(255, max(0, int(float(v) + 0.5))) for v in colour)


def mix(a, b, t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)


def random_colour(rng: np.random.Generator, sat=(0.2, 0.7), val=(0.45, 0.95)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b]) * 255.0


class HeadFrame:
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
        cv2.ellipse(img, self.pt(u, v), axes, self.tilt + extra_angle, start, end, rgb(colour), thickness)

    def arc_points(self, u, v, au, bv, start, end, delta=10) -> np.ndarray:
        axes = (max(1, int(round(au * self.a))), max(1, int(round(bv * self.b))))
        return cv2.ellipse2Poly(self.pt(u, v), axes, int(round(self.tilt)), int(start), int(end), delta)


# ------------------------------------------------------------------------------------- drawing


def draw_background(rng: np.random.Generator, canvas_size: int) -> Tuple[np.ndarray, str]:
    style = pick(rng, BACKGROUNDS)
    base = random_colour(rng)
    if style == "flat":
        small = base[None, None, :]
    elif style == "gradient":
        other = mix(base, random_colour(rng), rng.uniform(0.3, 0.8))
        small = np.stack([base, other])[:, None, :]  # (2, 1, 3): top to bottom
    elif style == "corners":
        small = np.stack([jitter(rng, base, 45) for _ in range(4)]).reshape(2, 2, 3)
    elif style == "blotches":
        n = int(rng.integers(3, 7))
        small = np.clip(base + rng.normal(0, 25, (n, n, 1)) + rng.normal(0, 10, (n, n, 3)), 0, 255)
    else:  # stripes
        other = jitter(rng, base, 40)
        n = int(rng.integers(3, 9))
        small = np.where((np.arange(n) % 2 == 0)[None, :, None], base, other)
    interp = {"stripes": cv2.INTER_NEAREST, "blotches": cv2.INTER_CUBIC}.get(style, cv2.INTER_LINEAR)
    # Resize in uint8 (cv2 saturates): clipping a float canvas costs more than all the drawing.
    small = np.ascontiguousarray(np.clip(np.broadcast_to(small, small.shape), 0, 255).round(), np.uint8)
    return cv2.resize(small, (canvas_size, canvas_size), interpolation=interp), style


def draw_body(rng, img, head: HeadFrame, skin, C: int) -> None:
    shirt = random_colour(rng, sat=(0.1, 0.8), val=(0.2, 0.9))
    body_x = head.cx + rng.normal(0, 0.02 * C)
    shoulder_w = C * rng.uniform(0.36, 0.5)
    shoulder_h = C * rng.uniform(0.2, 0.3)
    body_y = max(head.cy + head.b * 1.05 + shoulder_h * 0.65, C * rng.uniform(0.98, 1.06))
    cv2.ellipse(img, (int(body_x), int(body_y)), (int(shoulder_w), int(shoulder_h)), 0, 0, 360, rgb(shirt), -1)
    # Neck: from under the jaw straight down into the shirt, in shadow under the chin.
    neck_w = rng.uniform(0.36, 0.5)
    top_l, top_r = head.xy(-neck_w, 0.6), head.xy(neck_w, 0.6)
    neck = np.array([top_l, top_r, (top_r[0] + 0.02 * C, body_y), (top_l[0] - 0.02 * C, body_y)], np.int32)
    cv2.fillPoly(img, [neck], rgb(skin * 0.82))
    neckline = pick(rng, ("round", "v", "none"))
    top_y = body_y - shoulder_h
    half = 0.5 * (top_r[0] - top_l[0]) + 0.02 * C
    if neckline == "v":
        depth = C * rng.uniform(0.06, 0.14)
        tri = np.array([(body_x - half, top_y), (body_x + half, top_y), (body_x, top_y + depth)], np.int32)
        cv2.fillPoly(img, [tri], rgb(skin * 0.82))
    elif neckline == "round":
        cv2.ellipse(img, (int(body_x), int(top_y)), (int(half), int(0.04 * C)), 0, 0, 180, rgb(skin * 0.82), -1)
        cv2.ellipse(img, (int(body_x), int(top_y)), (int(half), int(0.04 * C)), 0, 0, 180,
                    rgb(shirt * 0.6), max(1, C // 100))


def hair_outline(rng, style: str) -> Dict[str, float]:
    """Shape of the hair mass around the top of the head, in head units."""
    if style == "buzz":
        return dict(dy=0.0, sx=1.02, sy=1.02)
    if style == "curly":
        return dict(dy=rng.uniform(0.08, 0.16), sx=rng.uniform(1.15, 1.3), sy=rng.uniform(1.1, 1.22))
    return dict(dy=rng.uniform(0.02, 0.08), sx=rng.uniform(1.04, 1.12), sy=rng.uniform(1.02, 1.1))


def draw_back_hair(rng, img, head: HeadFrame, style: str, outline, colour) -> None:
    """Hair behind the head (long, bob, curly): drawn before the neck and face."""
    dy, sx, sy = outline["dy"], outline["sx"], outline["sy"]
    if style == "curly":
        head.ellipse(img, 0, -dy, sx, sy, colour)
        r = max(2, int(0.2 * head.a))
        for ang in range(140, 401, 22):
            x, y = head.arc_points(0, -dy, sx, sy, ang, ang + 1, delta=1)[0]
            cv2.circle(img, (int(x), int(y)), int(r * rng.uniform(0.8, 1.25)), rgb(colour), -1)
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
    cv2.fillPoly(img, [pts], rgb(colour))


def draw_ears(rng, img, head: HeadFrame, skin, v_eye: float) -> None:
    ear_v = v_eye + rng.uniform(0.05, 0.15)
    au, bv = rng.uniform(0.14, 0.2), rng.uniform(0.17, 0.24)
    for s in (-1, 1):
        head.ellipse(img, s * 0.97, ear_v, au, bv, skin * 0.95)
        head.ellipse(img, s * 0.99, ear_v, au * 0.5, bv * 0.6, skin * 0.78)


def draw_top_hair(rng, img, head: HeadFrame, style: str, outline, colour, C: int) -> Dict[str, Any]:
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
    cv2.fillPoly(img, [pts], rgb(colour))
    # A few strands for texture, darker than the hair.
    strand = rgb(colour * 0.75)
    for _ in range(int(rng.integers(0, 5))):
        u0 = rng.uniform(-0.6, 0.6)
        cv2.line(img, head.pt(u0, -0.95), head.pt(u0 + rng.uniform(-0.2, 0.2), v_fore - 0.05), strand, max(1, C // 128))
    return {"v_forehead": v_fore}


def draw_eyes(rng, img, head: HeadFrame, v_eye: float, C: int) -> Dict[str, Any]:
    u_eye = rng.uniform(0.34, 0.46)
    ew = rng.uniform(0.13, 0.19)  # half-width in units of a
    eh_px = ew * head.a * rng.uniform(0.5, 0.75)
    eh = eh_px / head.b
    iris = jitter(rng, pick(rng, IRIS_COLOURS), 10)
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
        cv2.circle(img, head.pt(iu, iv), max(1, int(r_iris)), rgb(iris), -1)
        cv2.circle(img, head.pt(iu, iv), max(1, int(r_pupil)), (15, 12, 12), -1)
        hx, hy = head.xy(iu, iv)
        glint = (int(hx + 0.35 * r_iris), int(hy - 0.35 * r_iris))
        cv2.circle(img, glint, max(1, int(0.22 * r_iris)), (255, 255, 255), -1)
        # Redraw the white's outline over the iris, and a thick upper lid, so the iris looks
        # tucked under the eyelids.
        head.ellipse(img, u, v, ew, eh, (35, 25, 25), line, 0, 360, s * eye_tilt)
        head.ellipse(img, u, v, ew * 1.03, eh * 1.05, (25, 18, 18), line * 2, 190, 350, s * eye_tilt)
    return {"u_eye": u_eye, "ew": ew, "eh": eh, "centres": centres, "closed": closed}


def draw_eyebrows(rng, img, head: HeadFrame, eyes, colour, C: int) -> None:
    base = eyes["v_eye"] - eyes["eh"] - rng.uniform(0.06, 0.14)
    arch = rng.uniform(0.0, 0.08)
    inner_drop = rng.uniform(-0.05, 0.06)  # >0: frowning, <0: surprised
    thick = max(1, int(round(C * rng.uniform(0.012, 0.028))))
    for s in (-1, 1):
        u0 = s * eyes["u_eye"]
        inner, outer = u0 - s * eyes["ew"] * 1.1, u0 + s * eyes["ew"] * 1.25
        pts = [(inner, base + inner_drop), (u0, base - arch), (outer, base + 0.03)]
        cv2.polylines(img, [head.poly(pts)], False, rgb(colour), thick)


def draw_nose(rng, img, head: HeadFrame, skin, v_eye: float, C: int) -> Tuple[str, Tuple[float, float]]:
    style = pick(rng, NOSE_STYLES)
    v_tip = v_eye + rng.uniform(0.3, 0.42)
    w = rng.uniform(0.08, 0.14)
    shade = skin * 0.72
    line = max(1, int(round(C / 100)))
    if style == "line":
        side = 1 if rng.random() < 0.5 else -1
        pts = [(side * 0.03, v_eye + 0.1), (side * w, v_tip), (-side * 0.03, v_tip + 0.04)]
        cv2.polylines(img, [head.poly(pts)], False, rgb(shade), line)
    elif style == "triangle":
        cv2.fillPoly(img, [head.poly([(0, v_eye + 0.05), (w, v_tip), (-w, v_tip)])], rgb(skin * 0.88))
        head.ellipse(img, 0, v_tip, w, 0.03, shade, line, 0, 180)
    elif style == "button":
        head.ellipse(img, 0, v_tip - 0.03, w * 0.8, 0.06, skin * 0.88)
    if style in ("nostrils", "button"):
        for s in (-1, 1):
            head.ellipse(img, s * w * 0.5, v_tip, 0.035, 0.02, skin * 0.45)
    return style, head.xy(0, v_tip)


def draw_beard(rng, img, head: HeadFrame, colour, v_eye: float) -> str:
    kind = pick(rng, ("moustache", "beard", "goatee"), p=(0.4, 0.4, 0.2))
    if kind == "beard":
        v_top = v_eye + rng.uniform(0.46, 0.56)
        theta = math.degrees(math.asin(float(np.clip(v_top / 1.04, -1, 1))))
        arc = head.arc_points(0, 0, 1.02, 1.04, theta, 180 - theta, delta=10)
        cv2.fillPoly(img, [arc], rgb(colour))
    elif kind == "goatee":
        head.ellipse(img, 0, 0.85, 0.2, 0.16, colour)
    return kind


def draw_mouth(rng, img, head: HeadFrame, skin, v_eye: float, C: int, moustache_colour=None) -> Dict[str, Any]:
    """The mouth, drawn bold: 0.6-1 head half-widths wide with strokes of ~1.6 output pixels, so that
    its style (smile, grin, neutral, lips, open) survives a 16 x 16 token grid at 64 px and the
    sketch-guided edits of the demo have something visible to change."""
    style = pick(rng, MOUTH_STYLES)
    v_m = v_eye + rng.uniform(0.58, 0.7)
    mw = rng.uniform(0.3, 0.5)
    lip = mix(skin, jitter(rng, LIP_TINT, 20), rng.uniform(0.5, 0.85))
    dark = mix(lip, (40, 10, 15), 0.7)
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
        cv2.line(img, head.pt(-mw, v_m - h * 0.3), head.pt(mw, v_m - h * 0.3), rgb(lip), line)
    elif style == "neutral":
        h = rng.uniform(0.05, 0.08)
        head.ellipse(img, 0, v_m, mw, h, lip)
        cv2.line(img, head.pt(-mw, v_m), head.pt(mw, v_m), rgb(dark), line)
    elif style == "lips":
        h = rng.uniform(0.08, 0.12)
        head.ellipse(img, 0, v_m, mw, h, lip, -1, 180, 360)
        head.ellipse(img, 0, v_m, mw * 0.9, h * 1.3, lip * 0.95, -1, 0, 180)
        cv2.line(img, head.pt(-mw, v_m), head.pt(mw, v_m), rgb(dark), line)
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


def draw_glasses(rng, img, head: HeadFrame, eyes, C: int) -> str:
    kind = "sunglasses" if rng.random() < 0.25 else "glasses"
    frame = rgb(random_colour(rng, sat=(0.0, 0.6), val=(0.05, 0.5)))
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


def draw_hat(rng, img, head: HeadFrame, C: int) -> None:
    colour = random_colour(rng, sat=(0.3, 0.9), val=(0.3, 0.9))
    v_band = rng.uniform(-0.6, -0.45)
    theta0 = math.degrees(math.asin(float(np.clip((v_band + 0.05) / 1.1, -1, 1))))
    arc = head.arc_points(0, -0.05, 1.1, 1.1, 180 - theta0, 360 + theta0, delta=8)
    cv2.fillPoly(img, [arc], rgb(colour))
    band = head.poly([(-1.12, v_band - 0.12), (1.12, v_band - 0.12), (1.12, v_band + 0.02), (-1.12, v_band + 0.02)])
    cv2.fillPoly(img, [band], rgb(colour * 0.7))
    if rng.random() < 0.5:  # pompom
        cv2.circle(img, head.pt(0, -1.18), max(2, int(0.16 * head.a)), rgb(jitter(rng, colour, 50)), -1)
