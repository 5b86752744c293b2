"""Procedural stick figures in textured scenes: a pose-guided demo dataset with no files.

Stands in for Penn Action (iLAT, Cao et al., NeurIPS 2021, Sec. 3.3 and Sec. 4) in configs, tests
and demos. A "video" is one figure (colours, limb thickness, body proportions, sleeves, hair) on
one background (gradients, blotches or flat patches with light film grain by default; stripes and
checkers on request); its frames change only the pose: torso lean, head tilt, arms and legs
swinging within plausible ranges.
Joints follow Penn Action's order (`ilat_ext.data.pose.JOINT_NAMES`) and all 13 are visible; the
figure faces the camera, so the person's left is on the image's right.

Items pair two frames of one video, with `PennAction`'s keys (see `make_pair_item`): the target
frame `image`, the condition frame `cond_image`, their poses and `mask = pair_mask(cond, target)`.
Item i is frame i % frames_per_video of video i // frames_per_video; its condition frame is
another frame of that video, drawn from the item's own seeded stream.

Why the masks are exact here: the figure is drawn 4x supersampled with a binary coverage alpha,
shrunk with INTER_AREA and composited over the background, so every pixel the figure does not
touch is the background bit for bit. Body sizes are tied to the person's height so that the
default pose mask (`DEFAULT_MASK_KWARGS`: dilation = 0.2 x the joints' bounding box) covers the
whole figure: outside `mask`, `cond_image` and `image` are identical (tested).

Determinism: everything is a pure function of (seed, split, index) through
`np.random.default_rng([_STREAM_TAG, seed, split_id, video_or_index, stream, ...])`; the splits use
different split ids and so never share a video.
"""
import colorsys
import math
from typing import Any, Dict, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

from ilat_ext.data.pose import make_pair_item
from ilat_ext.pose_geometry import (
    HEAD, L_ANKLE, L_ELBOW, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, LIMBS, NUM_JOINTS, R_ANKLE, R_ELBOW, R_HIP, R_KNEE,
    R_SHOULDER, R_WRIST, TORSO, check_mask_kwargs, check_pose,
)

SPLITS = ("train", "validation", "test")
# Arbitrary constant that keeps these streams apart from other seeded generators in the project.
_STREAM_TAG = 0x9053
_VIDEO_STREAM, _POSE_STREAM, _PAIR_STREAM, _BACKGROUND_STREAM = 0, 1, 2, 3
BACKGROUNDS = ("stripes", "gradient", "checker", "blotches", "patches")
# The default scenes: smooth backgrounds and large flat shapes. A 16 x 16-token autoencoder trained
# for a few hundred CPU steps reconstructs these; with sharp stripes and checkers it stays near the
# mean colour, and the figure is lost with it (docs/results.md, first-stage choices).
SMOOTH_BACKGROUNDS = ("gradient", "blotches", "patches")
_SS = 4  # supersampling factor of the figure


# --------------------------------------------------------------------------------------- helpers


def _colour(rng: np.random.Generator, sat=(0.25, 0.9), val=(0.3, 0.95)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b]) * 255.0


def _c(colour):
    return tuple(int(min(255, max(0, round(float(v))))) for v in colour)


def _unit(angle_deg: float) -> np.ndarray:
    """Direction at `angle_deg` from straight down, positive towards +x (image right)."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)])


def _background(rng: np.random.Generator, size: int, styles=SMOOTH_BACKGROUNDS, grain=(1.0, 4.0)) -> np.ndarray:
    style = styles[int(rng.integers(len(styles)))]
    a, b = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    angle = rng.uniform(0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    if style == "stripes":
        t = (np.floor(along * rng.uniform(3, 10)) % 2)[..., None]
    elif style == "gradient":
        t = ((along - along.min()) / max(np.ptp(along), 1e-6))[..., None]
    elif style == "checker":
        n = rng.uniform(3, 8)
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2)[..., None]
    elif style == "blotches":
        n = int(rng.integers(3, 7))
        small = rng.random((n, n)).astype(np.float32)
        t = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)[..., None].astype(np.float64)
    else:  # patches: a base colour with a few rectangles and ellipses in other colours
        t = np.zeros((size, size, 1))
    image = (1 - t) * a + t * b
    if style == "patches":
        image = np.ascontiguousarray(image)
        for _ in range(int(rng.integers(3, 8))):
            colour = _c(_colour(rng))
            x0, y0 = (int(v) for v in rng.integers(0, size, 2))
            w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
            if rng.random() < 0.5:
                cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), colour, -1)
            else:
                cv2.ellipse(image, (x0, y0), (w // 2, h // 2), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    image = image + rng.normal(0.0, rng.uniform(*grain), image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------- dataset


class ToyPoses(torch.utils.data.Dataset):
    """Pairs of frames of procedural stick-figure "videos", in `PennAction`'s item layout.

    Items are dicts:
        "image", "cond_image": float32 (size, size, 3) in [-1, 1], target and condition frames;
        "pose", "cond_pose": float32 (13, 3) normalised poses ([x / size, y / size, 1]);
        "pose_px", "cond_pose_px": float32 (13, 3) poses in pixels (corner convention);
        "mask": float32 (size, size, 1) in {0, 1} = pair_mask(cond_pose_px, pose_px, **mask_kwargs);
        "cond_skeleton", "target_skeleton": float32 (size, size, 1) (only if `skeletons`);
        "video": int, "frames": int64 [cond frame, target frame], "index": int.

    Args:
        size: image side; a multiple of 16 in [32, 256].
        length: number of items (= pairs); videos = ceil(length / frames_per_video).
        seed: non-negative integer; with `split` and the index it fixes each item.
        split: "train", "validation" or "test" (disjoint streams).
        frames_per_video: frames (poses) per video, >= 2.
        mask_kwargs: `pose_mask` settings (see `ilat_ext.data.pose.check_mask_kwargs`); the
            background-is-untouched guarantee is for the defaults.
        skeletons: add the rendered skeletons.
        backgrounds: the scene styles drawn from, a subset of `BACKGROUNDS`; the default
            `SMOOTH_BACKGROUNDS` (gradients, blotches, large flat shapes, light grain) is what a toy
            autoencoder learns in minutes; add "stripes" and "checker" for harder textured scenes.
    """

    def __init__(self, size: int = 64, length: int = 512, seed: int = 0, split: str = "train",
                 frames_per_video: int = 8, mask_kwargs: Optional[Mapping[str, Any]] = None,
                 skeletons: bool = False, backgrounds: Sequence[str] = SMOOTH_BACKGROUNDS):
        super().__init__()
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not (32 <= size <= 256) or size % 16:
            raise ValueError(f"size must be a multiple of 16 in [32, 256], got {size!r}")
        for what, value, low in (("length", length, 1), ("seed", seed, 0), ("frames_per_video", frames_per_video, 2)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(skeletons, bool):
            raise ValueError(f"skeletons must be True or False, got {skeletons!r}")
        backgrounds = (backgrounds,) if isinstance(backgrounds, str) else tuple(backgrounds)
        unknown = [b for b in backgrounds if b not in BACKGROUNDS]
        if not backgrounds or unknown:
            raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUNDS}, got {list(backgrounds)}")
        self.backgrounds = backgrounds
        # the textured scenes keep the film grain they were designed with
        self._grain = (1.0, 4.0) if set(backgrounds) <= set(SMOOTH_BACKGROUNDS) else (2.0, 8.0)
        self.size, self.length, self.seed, self.split = int(size), int(length), int(seed), split
        self.frames_per_video = int(frames_per_video)
        self.mask_kwargs = check_mask_kwargs(mask_kwargs)
        self.skeletons = skeletons

    @property
    def num_videos(self) -> int:
        return -(-self.length // self.frames_per_video)

    def __len__(self) -> int:
        return self.length

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([_STREAM_TAG, self.seed, SPLITS.index(self.split), *key])

    def _check(self, what: str, value, upper: int) -> int:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{what} must be an integer, got {value!r}")
        value = int(value)
        if value < 0:
            value += upper
        if not 0 <= value < upper:
            raise IndexError(f"{what} {value} out of range [0, {upper}) for {self!r}")
        return value

    # ---------------------------------------------------------------------------- figure model

    def video_params(self, video_index: int) -> Dict[str, Any]:
        """The video's figure: proportions and thickness (px), colours, where the pelvis rests."""
        video_index = self._check("video_index", video_index, self.num_videos)
        rng = self._rng(video_index, _VIDEO_STREAM)
        S = self.size
        h = S * rng.uniform(0.6, 0.75)  # body height unit
        u = lambda lo, hi: h * rng.uniform(lo, hi)  # noqa: E731
        params = {
            "h": h,
            "pelvis": np.array([S * rng.uniform(0.42, 0.58), S * rng.uniform(0.5, 0.58)]),
            "torso": u(0.27, 0.32), "neck": u(0.08, 0.1), "head_r": u(0.055, 0.065),
            "shoulder": u(0.09, 0.12), "hip": u(0.06, 0.08),
            "upper_arm": u(0.13, 0.16), "forearm": u(0.12, 0.15), "thigh": u(0.19, 0.23), "shin": u(0.18, 0.22),
            # Line thickness; with the head radius it stays inside the default pose mask.
            "thick": u(0.1, 0.125),
            "skin": _colour(rng, sat=(0.2, 0.6), val=(0.35, 0.95)),
            "shirt": _colour(rng), "trousers": _colour(rng), "shoes": _colour(rng, val=(0.1, 0.5)),
            "hair": _colour(rng, sat=(0.1, 0.8), val=(0.05, 0.6)),
            "long_sleeves": bool(rng.random() < 0.5),
        }
        return params

    def background(self, video_index: int) -> np.ndarray:
        """uint8 (size, size, 3): the video's background, shared by all its frames."""
        video_index = self._check("video_index", video_index, self.num_videos)
        return _background(self._rng(video_index, _BACKGROUND_STREAM), self.size, self.backgrounds, self._grain)

    def video_pose(self, video_index: int, frame: int) -> np.ndarray:
        """float32 (13, 3) pose in pixels of frame `frame` of video `video_index` (all visible)."""
        video_index = self._check("video_index", video_index, self.num_videos)
        p = self.video_params(video_index)
        frame = self._check("frame", frame, self.frames_per_video)
        rng = self._rng(video_index, _POSE_STREAM, frame)
        lean = rng.uniform(-12, 12)
        up = -_unit(lean)  # pelvis -> shoulders
        side = np.array([up[1] * -1.0, up[0]])  # perpendicular, towards image right when upright
        side = side if side[0] >= 0 else -side
        joints = np.zeros((NUM_JOINTS, 2))
        pelvis = p["pelvis"]
        mid = pelvis + p["torso"] * up
        joints[L_SHOULDER], joints[R_SHOULDER] = mid + p["shoulder"] * side, mid - p["shoulder"] * side
        joints[L_HIP], joints[R_HIP] = pelvis + p["hip"] * side, pelvis - p["hip"] * side
        joints[HEAD] = mid + (p["neck"] + p["head_r"]) * _unit(lean + 180 + rng.uniform(-20, 20))
        # s = +1: the person's left (image right). Angles from straight down, positive = outwards.
        for s, sh, el, wr, hp, kn, an in ((1, L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE),
                                          (-1, R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE)):
            arm = rng.uniform(-25, 165)
            elbow = arm + rng.uniform(-100, 100)
            joints[el] = joints[sh] + p["upper_arm"] * _unit(s * arm)
            joints[wr] = joints[el] + p["forearm"] * _unit(s * elbow)
            leg = rng.uniform(-8, 40)
            knee = float(np.clip(leg + rng.uniform(-50, 50), -30, 60))
            joints[kn] = joints[hp] + p["thigh"] * _unit(s * leg)
            joints[an] = joints[kn] + p["shin"] * _unit(s * knee)
        # Keep the whole figure (joints plus what is drawn around them) inside the frame.
        margin = p["head_r"] + p["thick"] + 2.0
        low, high = joints.min(0) - margin, joints.max(0) + margin
        joints += np.maximum(0.0, -low) - np.maximum(0.0, high - self.size)
        pose = np.concatenate([joints, np.ones((NUM_JOINTS, 1))], axis=1)
        return check_pose(pose, self.size, self.size, name=f"toy pose (video {video_index}, frame {frame})")

    def render(self, video_index: int, pose_px) -> np.ndarray:
        """uint8 (size, size, 3): video `video_index`'s figure in `pose_px` (13, 3, pixels) over its
        background. Bones touching invisible joints are not drawn (as in `render_skeleton`)."""
        return self._draw(video_index, pose_px)[0]

    def figure_alpha(self, video_index: int, pose_px) -> np.ndarray:
        """float32 (size, size) in [0, 1]: the figure's coverage in `render(video_index, pose_px)`;
        where it is 0 the rendered pixel is the background's, bit for bit."""
        return self._draw(video_index, pose_px)[1]

    def _draw(self, video_index: int, pose_px):
        p = self.video_params(video_index)
        pose = check_pose(pose_px, self.size, self.size, name="pose_px")
        C, one = self.size * _SS, 16
        colour = np.zeros((C, C, 3), np.uint8)
        alpha = np.zeros((C, C), np.uint8)
        vis = pose[:, 2] > 0

        def pt(j_or_xy):
            xy = pose[j_or_xy, :2] if isinstance(j_or_xy, (int, np.integer)) else j_or_xy
            return tuple(int(round((v * _SS - 0.5) * one)) for v in xy)

        def line(a, b, col, thick):
            cv2.line(colour, pt(a), pt(b), _c(col), thick, cv2.LINE_8, 4)
            cv2.line(alpha, pt(a), pt(b), 255, thick, cv2.LINE_8, 4)

        def disc(a, radius, col):
            r = max(1, int(round(radius * _SS * one)))
            cv2.circle(colour, pt(a), r, _c(col), -1, cv2.LINE_8, 4)
            cv2.circle(alpha, pt(a), r, 255, -1, cv2.LINE_8, 4)

        t = max(1, int(round(p["thick"] * _SS)))
        for hp, kn, an in ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE)):
            if vis[hp] and vis[kn]:
                line(hp, kn, p["trousers"], t)
            if vis[kn] and vis[an]:
                line(kn, an, p["trousers"] * 0.85, t)
            if vis[an]:
                disc(an, 0.6 * p["thick"], p["shoes"])
        if vis[list(TORSO)].all():
            poly = np.array([pt(j) for j in TORSO], np.int32)
            cv2.fillPoly(colour, [poly], _c(p["shirt"]), cv2.LINE_8, 4)
            cv2.fillPoly(alpha, [poly], 255, cv2.LINE_8, 4)
        for a, b in LIMBS:  # torso outline (rounded corners) and hip line in the shirt's colour
            if {a, b} <= set(TORSO) and vis[a] and vis[b]:
                line(a, b, p["shirt"] if (a, b) != (L_HIP, R_HIP) else p["trousers"], t)
        if vis[HEAD] and vis[L_SHOULDER] and vis[R_SHOULDER]:
            line(HEAD, 0.5 * (pose[L_SHOULDER, :2] + pose[R_SHOULDER, :2]), p["skin"] * 0.85, t)
        for sh, el, wr in ((L_SHOULDER, L_ELBOW, L_WRIST), (R_SHOULDER, R_ELBOW, R_WRIST)):
            if vis[sh] and vis[el]:
                line(sh, el, p["shirt"] * 0.9, t)
            if vis[el] and vis[wr]:
                line(el, wr, p["shirt"] * 0.8 if p["long_sleeves"] else p["skin"], t)
            if vis[wr]:
                disc(wr, 0.6 * p["thick"], p["skin"])
        if vis[HEAD]:
            disc(HEAD, p["head_r"], p["skin"])
            # Hair: the top half of the head disc, one supersample inside it (colour only, so it
            # must stay where alpha is already set).
            r = max(1, int(round(p["head_r"] * _SS * one)) - one)
            cv2.ellipse(colour, pt(HEAD), (r, r), 0, 180, 360, _c(p["hair"]), -1, cv2.LINE_8, 4)

        # Premultiplied shrink: where no supersample is covered, colour and alpha are exactly 0.
        small_colour = cv2.resize(colour.astype(np.float32), (self.size, self.size), interpolation=cv2.INTER_AREA)
        small_alpha = cv2.resize(alpha.astype(np.float32) / 255.0, (self.size, self.size),
                                 interpolation=cv2.INTER_AREA)[..., None]
        out = self.background(video_index).astype(np.float32) * (1.0 - small_alpha) + small_colour
        return np.clip(out, 0, 255).round().astype(np.uint8), small_alpha[..., 0]

    # ------------------------------------------------------------------------------------ items

    def pair(self, index: int):
        """(video, cond frame, target frame) of item `index`."""
        index = self._check("index", index, self.length)
        video, target = divmod(index, self.frames_per_video)
        offset = int(self._rng(index, _PAIR_STREAM).integers(1, self.frames_per_video))
        return video, (target + offset) % self.frames_per_video, target

    def __getitem__(self, index: int) -> Dict[str, Any]:
        video, cond, target = self.pair(index)
        cond_pose, target_pose = self.video_pose(video, cond), self.video_pose(video, target)
        item = make_pair_item(self.render(video, cond_pose), self.render(video, target_pose),
                              cond_pose, target_pose, self.mask_kwargs, self.skeletons)
        item.update(video=video, frames=np.array([cond, target], np.int64), index=int(index) % self.length)
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, length={self.length}, seed={self.seed}, "
                f"split={self.split!r}, frames_per_video={self.frames_per_video}, "
                f"backgrounds={list(self.backgrounds)})")
