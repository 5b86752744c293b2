"""Body poses for pose-guided person synthesis: Penn Action's 13 joints, skeletons and pose masks.

iLAT (Cao et al., NeurIPS 2021), Sec. 3.3 "Non-iconic posed-guiding": the condition is a picture of
the person in one pose plus the 13 target-pose landmarks (fed to a PointMLP); the region to
regenerate is "the union of conditional and target masks got by dilating the poses with different
kernel sizes according to the scenes". The authors never released that mask builder; this module
is our reading of it, as small pure functions.

Conventions
- A pose is a (13, 3) float array of [x, y, visibility] rows in Penn Action's joint order
  (`JOINT_NAMES`). x, y are continuous pixel coordinates with the origin at the top-left CORNER of
  the image: pixel (row i, column j) covers [j, j+1) x [i, i+1), so a visible joint lies in
  [0, width] x [0, height] and resizing an image by (sx, sy) maps (x, y) to (sx x, sy y) exactly.
  visibility is 0 or 1; invisible joints may hold anything (NaN included) and are ignored.
- A pixel mask is float32 (H, W) in {0, 1}, 1 = region to regenerate (as everywhere in the project).

The pose mask of one pose (`pose_mask`) is its skeleton (`render_skeleton` with the torso filled)
dilated by an elliptical kernel whose size grows with the person: `pose_dilation_kernel` =
`scale` x the longer side of the visible joints' bounding box, clipped to [min_kernel, max_kernel]
and made odd. That is "a kernel size according to the scene": a person filling the frame gets a
fat mask, a small person far away a thin one. The training mask is `pair_mask`: the union of the
condition pose's and the target pose's masks (at inference the condition image is the reference
and the same union is used).

Worked example (a person 40 px tall in a 64 x 64 image)::

    >>> pose = np.zeros((13, 3), np.float32); pose[:, 2] = 1
    >>> pose[:, 0] = 32; pose[:, 1] = np.linspace(10, 50, 13)
    >>> pose_dilation_kernel(pose, 64, 64)   # round(0.2 * 40) = 8 -> odd
    9
    >>> m = pose_mask(pose, 64, 64)
    >>> m.dtype, float(m[30, 32]), float(m[30, 5])
    (dtype('float32'), 1.0, 0.0)
"""
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

# Penn Action README, "List of Annotated Joints" (1-based there): 1 head, 2 left_shoulder,
# 3 right_shoulder, 4 left_elbow, 5 right_elbow, 6 left_wrist, 7 right_wrist, 8 left_hip,
# 9 right_hip, 10 left_knee, 11 right_knee, 12 left_ankle, 13 right_ankle. Left = the person's left.
JOINT_NAMES: Tuple[str, ...] = (
    "head", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
    "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX: Dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}
HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = range(7)
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = range(7, 13)

# Bones as (joint, joint) index pairs. The head connects to both shoulders (Penn Action has no
# neck joint); `render_skeleton` also draws head -> shoulder midpoint when all three are visible.
LIMBS: Tuple[Tuple[int, int], ...] = (
    (HEAD, L_SHOULDER), (HEAD, R_SHOULDER), (L_SHOULDER, R_SHOULDER),
    (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST),
    (L_SHOULDER, L_HIP), (R_SHOULDER, R_HIP), (L_HIP, R_HIP),
    (L_HIP, L_KNEE), (L_KNEE, L_ANKLE), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE),
)
TORSO: Tuple[int, ...] = (L_SHOULDER, R_SHOULDER, R_HIP, L_HIP)  # polygon order

# RGB colours per limb for overlays: warm = the person's left, cool = right, grey = centre.
LIMB_COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (200, 200, 200), (200, 200, 200), (255, 255, 255),
    (255, 140, 0), (255, 220, 0), (0, 160, 255), (0, 255, 220),
    (255, 80, 80), (80, 80, 255), (255, 255, 255),
    (255, 0, 120), (255, 0, 255), (0, 200, 80), (120, 255, 0),
)

RESIZE_MODES = ("stretch", "pad")
# Defaults of the pose mask; `check_mask_kwargs` accepts exactly these keys.
DEFAULT_MASK_KWARGS: Dict[str, float] = {
    "scale": 0.2, "min_kernel": 3, "max_kernel": 81, "limb_width": 3, "joint_radius": 3,
}

_SHIFT = 4  # cv2 fractional bits: sub-pixel joint positions when drawing
_ONE = 1 << _SHIFT


# -------------------------------------------------------------------------------------- checks


def _check_size(height, width) -> Tuple[int, int]:
    for what, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(height), int(width)


def _as_pose_array(pose, name: str) -> np.ndarray:
    try:
        array = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a ({NUM_JOINTS}, 3) array of [x, y, visibility], got {pose!r}") from None
    if array.ndim == 2 and array.shape[1] == 3 and array.shape[0] != NUM_JOINTS:
        raise ValueError(
            f"{name} has {array.shape[0]} joints, expected {NUM_JOINTS} in Penn Action's order "
            f"({', '.join(JOINT_NAMES)})"
        )
    if array.shape != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must be a ({NUM_JOINTS}, 3) array of [x, y, visibility], got shape {array.shape}")
    return array


def check_pose(pose, height: int, width: int, name: str = "pose") -> np.ndarray:
    """Validate a pose for a (height, width) image; returns it as a float32 (13, 3) copy.

    Raises ValueError naming the problem: a wrong shape or number of joints, a visibility that
    is not 0 or 1, a visible joint with a non-finite coordinate or outside [0, width] x [0, height]
    (naming the joint, its value and the image size). Invisible joints may hold anything.
    """
    height, width = _check_size(height, width)
    array = _as_pose_array(pose, name)
    vis = array[:, 2]
    for j in range(NUM_JOINTS):
        if vis[j] not in (0.0, 1.0):
            raise ValueError(f"{name} joint {j} ({JOINT_NAMES[j]}): visibility must be 0 or 1, got {vis[j]!r}")
        if vis[j] == 0.0:
            continue
        x, y = array[j, 0], array[j, 1]
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError(f"{name} joint {j} ({JOINT_NAMES[j]}) is visible but not finite: x={x!r}, y={y!r}")
        if not (0.0 <= x <= width and 0.0 <= y <= height):
            raise ValueError(
                f"{name} joint {j} ({JOINT_NAMES[j]}) is visible at (x={x:g}, y={y:g}), outside the "
                f"{width}x{height} (width x height) image"
            )
    return array.astype(np.float32)


def clean_pose(pose, height: int, width: int, name: str = "pose") -> Tuple[np.ndarray, int]:
    """Make a raw annotation valid: (float32 (13, 3) pose, number of joints hidden).

    Visibility becomes 1 where it is > 0 (COCO's 2 included) and 0 elsewhere (NaN included);
    visible joints with a non-finite coordinate or outside the image are marked invisible and
    counted (real annotations, Penn Action's included, put some on or past the frame's edge).
    Invisible joints get coordinates 0. Wrong shapes still raise ValueError.
    """
    height, width = _check_size(height, width)
    array = _as_pose_array(pose, name).copy()
    with np.errstate(invalid="ignore"):
        vis = np.nan_to_num(array[:, 2], nan=0.0) > 0
        inside = (np.isfinite(array[:, :2]).all(1) & (array[:, 0] >= 0) & (array[:, 0] <= width)
                  & (array[:, 1] >= 0) & (array[:, 1] <= height))
    hidden = int((vis & ~inside).sum())
    vis &= inside
    array[:, 2] = vis
    array[~vis, :2] = 0.0
    return array.astype(np.float32), hidden


def check_mask_kwargs(mask_kwargs: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """`DEFAULT_MASK_KWARGS` updated with `mask_kwargs`; unknown keys or bad values -> ValueError."""
    out = dict(DEFAULT_MASK_KWARGS)
    if mask_kwargs is None:
        return out
    if not isinstance(mask_kwargs, Mapping):
        raise ValueError(f"mask_kwargs must be a mapping with keys among {sorted(out)}, got {mask_kwargs!r}")
    unknown = sorted(set(mask_kwargs) - set(out))
    if unknown:
        raise ValueError(f"unknown mask_kwargs {unknown}; allowed: {sorted(out)}")
    out.update(mask_kwargs)
    _check_kernel_args(out["scale"], out["min_kernel"], out["max_kernel"])
    _check_pen(out["limb_width"], out["joint_radius"])
    return out


def _check_kernel_args(scale, min_kernel, max_kernel) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not (0 <= scale < np.inf):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    for what, value in (("min_kernel", min_kernel), ("max_kernel", max_kernel)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if max_kernel < min_kernel or (max_kernel == min_kernel and min_kernel % 2 == 0):
        raise ValueError(f"need min_kernel <= max_kernel with an odd size between them, got {min_kernel}, {max_kernel}")


def _check_pen(limb_width, joint_radius) -> None:
    if not isinstance(limb_width, (int, np.integer)) or isinstance(limb_width, bool) or limb_width < 1:
        raise ValueError(f"limb_width must be a positive integer, got {limb_width!r}")
    if not isinstance(joint_radius, (int, np.integer)) or isinstance(joint_radius, bool) or joint_radius < 0:
        raise ValueError(f"joint_radius must be a non-negative integer, got {joint_radius!r}")


# ----------------------------------------------------------------------------------------- I/O


def pose_from_list(joints, name: str = "pose") -> np.ndarray:
    """(13, 3) float64 from 13 [x, y, visibility] triples; null coordinates become NaN,
    true/false visibilities 1/0. Raises ValueError naming `name` on anything else."""
    if not isinstance(joints, (list, tuple)):
        raise ValueError(f"{name}: expected a list of {NUM_JOINTS} [x, y, visibility] triples, "
                         f"got {type(joints).__name__}")
    rows = []
    for j, triple in enumerate(joints):
        if not isinstance(triple, (list, tuple)) or len(triple) != 3:
            raise ValueError(f"{name}: joint {j} must be [x, y, visibility], got {triple!r}")
        try:
            rows.append([np.nan if v is None else float(v) for v in triple])
        except (TypeError, ValueError):
            raise ValueError(f"{name}: joint {j} must hold numbers, got {triple!r}") from None
    if len(rows) != NUM_JOINTS:
        raise ValueError(f"{name} has {len(rows)} joints, expected {NUM_JOINTS} in Penn Action's order "
                         f"({', '.join(JOINT_NAMES)})")
    return np.asarray(rows, np.float64)


def read_json(path, what: str = "JSON file"):
    """The parsed content of a JSON file; FileNotFoundError / ValueError naming `what` and the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path!r} is not valid JSON: {e}") from None


def load_pose_json(path, height: int, width: int) -> np.ndarray:
    """Validated float32 (13, 3) pose from a JSON file for a (height, width) image.

    The file holds 13 [x, y, visibility] triples in Penn Action's order, as a plain list or as
    {"joints": [...], ...} (other keys are ignored). Visibility: 0/1 or false/true; any value > 0
    counts as visible (COCO's 2 too). Raises FileNotFoundError naming a missing path, ValueError
    naming the file for malformed JSON or an invalid pose (see `check_pose`).
    """
    path = os.fspath(path)
    data = read_json(path, "pose file")
    if isinstance(data, dict):
        if "joints" not in data:
            raise ValueError(f"pose file {path!r}: a JSON object needs a 'joints' key, found {sorted(data)}")
        data = data["joints"]
    array = pose_from_list(data, name=f"pose file {path!r}")
    with np.errstate(invalid="ignore"):
        if np.isnan(array[:, 2]).any():
            raise ValueError(f"pose file {path!r}: visibility must be a number, found null")
        array[:, 2] = array[:, 2] > 0
    return check_pose(array, height, width, name=f"pose file {path!r}")


def save_pose_json(path, pose, height: int, width: int, **extra) -> None:
    """Write a validated pose as {"joints": [[x, y, v], ...], "height": H, "width": W, **extra}."""
    pose = check_pose(pose, height, width)
    joints = [[float(x), float(y), int(v)] for x, y, v in pose.tolist()]
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        json.dump({"joints": joints, "height": int(height), "width": int(width), **extra}, f)


# -------------------------------------------------------------------------------------- resizing


def scale_pose(pose, sx: float, sy: float, ox: float = 0.0, oy: float = 0.0) -> np.ndarray:
    """float32 (13, 3): x -> sx * x + ox, y -> sy * y + oy; visibility unchanged.

    In the corner convention (module docstring) resizing an image from (h, w) to (h', w') is
    exactly sx = w' / w, sy = h' / h with no offset."""
    out = np.array(_as_pose_array(pose, "pose"), np.float64)
    out[:, 0] = out[:, 0] * float(sx) + float(ox)
    out[:, 1] = out[:, 1] * float(sy) + float(oy)
    return out.astype(np.float32)


def square_resize_params(height: int, width: int, size: int,
                         mode: str = "stretch") -> Tuple[float, float, float, float]:
    """(sx, sy, ox, oy) mapping a point of a (height, width) frame into the size x size frame
    that `resize_image(frame, size, mode)` returns.

    "stretch": plain resize to size x size, aspect ratio not kept (the paper's "resized into
        256 x 256"): sx = size / width, sy = size / height.
    "pad": pad the short side with black to a centred square of side s = max(height, width)
        (left = (s - width) // 2, top = (s - height) // 2), then resize: sx = sy = size / s,
        ox = left * sx, oy = top * sy. Keeps the aspect ratio and every joint in the frame.
    """
    height, width = _check_size(height, width)
    size = _check_size(size, size)[0]
    if mode == "stretch":
        return size / width, size / height, 0.0, 0.0
    if mode == "pad":
        side = max(height, width)
        s = size / side
        return s, s, ((side - width) // 2) * s, ((side - height) // 2) * s
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def resize_image(image: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """(size, size[, C]) uint8 from an (H, W[, C]) uint8 image; see `square_resize_params`.
    INTER_AREA along a shrinking axis, INTER_CUBIC when both axes grow."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 (H, W) or (H, W, C) array, got {getattr(image, 'shape', image)!r}")
    height, width = image.shape[:2]
    square_resize_params(height, width, size, mode)  # validates
    if mode == "pad":
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        image = cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left,
                                   cv2.BORDER_CONSTANT, value=0)
        height = width = side
    interp = cv2.INTER_AREA if (height > size or width > size) else cv2.INTER_CUBIC
    out = cv2.resize(image, (int(size), int(size)), interpolation=interp)
    return out.reshape((size, size) + image.shape[2:])


def resize_pose(pose, height: int, width: int, size: int, mode: str = "stretch") -> np.ndarray:
    """A pose of a (height, width) frame moved into `resize_image(frame, size, mode)`.

    Visible joints are clipped to [0, size]: a joint on the frame's far edge (x = width) must
    stay valid despite float rounding."""
    out = scale_pose(pose, *square_resize_params(height, width, size, mode))
    vis = out[:, 2] > 0
    out[vis, :2] = np.clip(out[vis, :2], 0.0, float(size))
    return out


# --------------------------------------------------------------------------------------- drawing


def _fixed(x: float, y: float) -> Tuple[int, int]:
    # Corner convention -> cv2's pixel-centre convention (pixel j's centre is at x = j + 0.5).
    return int(round((x - 0.5) * _ONE)), int(round((y - 0.5) * _ONE))


def _visible_segments(pose: np.ndarray):
    """Bones whose both ends are visible, plus the neck (head -> shoulder midpoint)."""
    vis = pose[:, 2] > 0
    for a, b in LIMBS:
        if vis[a] and vis[b]:
            yield LIMBS.index((a, b)), pose[a, :2], pose[b, :2]
    if vis[HEAD] and vis[L_SHOULDER] and vis[R_SHOULDER]:
        yield None, pose[HEAD, :2], 0.5 * (pose[L_SHOULDER, :2] + pose[R_SHOULDER, :2])


def render_skeleton(pose, height: int, width: int, limb_width: int = 3, joint_radius: int = 3,
                    fill_torso: bool = False) -> np.ndarray:
    """uint8 (height, width) in {0, 1}: the pose's skeleton.

    Bones of `LIMBS` whose two joints are visible are lines `limb_width` px thick, plus the neck
    (head -> shoulder midpoint) when the head and both shoulders are visible; visible joints are
    discs of radius `joint_radius`. Invisible joints and the bones touching them are skipped.
    With `fill_torso` the shoulder-hip quadrilateral is filled when its four joints are visible.
    """
    pose = check_pose(pose, height, width)
    _check_pen(limb_width, joint_radius)
    canvas = np.zeros((height, width), np.uint8)
    vis = pose[:, 2] > 0
    if fill_torso and vis[list(TORSO)].all():
        cv2.fillPoly(canvas, [np.array([_fixed(*pose[j, :2]) for j in TORSO], np.int32)], 1, cv2.LINE_8, _SHIFT)
    for _, p, q in _visible_segments(pose):
        cv2.line(canvas, _fixed(*p), _fixed(*q), 1, int(limb_width), cv2.LINE_8, _SHIFT)
    for j in np.flatnonzero(vis):
        if joint_radius > 0:
            cv2.circle(canvas, _fixed(*pose[j, :2]), int(joint_radius) * _ONE, 1, -1, cv2.LINE_8, _SHIFT)
        else:
            x, y = pose[j, :2]
            canvas[min(int(y), height - 1), min(int(x), width - 1)] = 1
    return canvas


def draw_skeleton_overlay(image: np.ndarray, pose, limb_width: int = 2, joint_radius: int = 3) -> np.ndarray:
    """A copy of a uint8 (H, W, 3) RGB image with the pose drawn in colour (for image grids):
    limbs in `LIMB_COLOURS` (warm = the person's left, cool = right), joints as white discs."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 (H, W, 3) array, got {getattr(image, 'shape', image)!r}")
    pose = check_pose(pose, image.shape[0], image.shape[1])
    _check_pen(limb_width, joint_radius)
    out = np.ascontiguousarray(image.copy())
    for limb, p, q in _visible_segments(pose):
        colour = LIMB_COLOURS[limb] if limb is not None else (200, 200, 200)
        cv2.line(out, _fixed(*p), _fixed(*q), colour, int(limb_width), cv2.LINE_AA, _SHIFT)
    for j in np.flatnonzero(pose[:, 2] > 0):
        centre = _fixed(*pose[j, :2])
        cv2.circle(out, centre, int(joint_radius) * _ONE, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, centre, int(joint_radius) * _ONE, (0, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    return out


# ----------------------------------------------------------------------------------------- masks


def pose_dilation_kernel(pose, height: int, width: int, scale: float = DEFAULT_MASK_KWARGS["scale"],
                         min_kernel: int = DEFAULT_MASK_KWARGS["min_kernel"],
                         max_kernel: int = DEFAULT_MASK_KWARGS["max_kernel"]) -> int:
    """Odd side (px) of the dilation kernel for this pose: round(scale * max(bbox width, bbox
    height)) over the visible joints, clipped to [min_kernel, max_kernel] and rounded up to odd
    (down, if that passes max_kernel). No visible joint: the smallest odd size >= min_kernel."""
    pose = check_pose(pose, height, width)
    _check_kernel_args(scale, min_kernel, max_kernel)
    vis = pose[:, 2] > 0
    extent = 0.0
    if vis.any():
        xy = pose[vis, :2].astype(np.float64)
        extent = float(max(xy[:, 0].max() - xy[:, 0].min(), xy[:, 1].max() - xy[:, 1].min()))
    k = int(np.clip(round(scale * extent), min_kernel, max_kernel)) | 1
    return k if k <= max_kernel else k - 2


def pose_mask(pose, height: int, width: int, kernel: Optional[int] = None,
              scale: float = DEFAULT_MASK_KWARGS["scale"], min_kernel: int = DEFAULT_MASK_KWARGS["min_kernel"],
              max_kernel: int = DEFAULT_MASK_KWARGS["max_kernel"], limb_width: int = DEFAULT_MASK_KWARGS["limb_width"],
              joint_radius: int = DEFAULT_MASK_KWARGS["joint_radius"]) -> np.ndarray:
    """float32 (height, width) in {0, 1}: the skeleton (torso filled) dilated by an elliptical
    kernel of side `kernel`, or `pose_dilation_kernel(pose, ...)` when None. All zeros if no
    joint is visible."""
    skeleton = render_skeleton(pose, height, width, limb_width, joint_radius, fill_torso=True)
    if kernel is None:
        kernel = pose_dilation_kernel(pose, height, width, scale, min_kernel, max_kernel)
    elif not isinstance(kernel, (int, np.integer)) or isinstance(kernel, bool) or kernel < 1:
        raise ValueError(f"kernel must be a positive integer (its side in pixels), got {kernel!r}")
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(kernel), int(kernel)))
    return cv2.dilate(skeleton, element).astype(np.float32)


def pair_mask(cond_pose, target_pose, height: int, width: int, **mask_kwargs) -> np.ndarray:
    """float32 (height, width) in {0, 1}: pose_mask(cond_pose) OR pose_mask(target_pose), each
    pose with its own kernel (paper Sec. 3.3). `mask_kwargs` are `pose_mask`'s keywords."""
    return np.maximum(pose_mask(cond_pose, height, width, **mask_kwargs),
                      pose_mask(target_pose, height, width, **mask_kwargs))


def normalise_pose(pose, height: int, width: int) -> np.ndarray:
    """float32 (13, 3): [x / width, y / height, visibility] with invisible joints all zeros:
    the PointMLP's input (x, y in [0, 1], visibility in {0, 1})."""
    pose = check_pose(pose, height, width).astype(np.float64)
    out = np.zeros((NUM_JOINTS, 3), np.float64)
    vis = pose[:, 2] > 0
    out[vis, 0] = pose[vis, 0] / width
    out[vis, 1] = pose[vis, 1] / height
    out[vis, 2] = 1.0
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------ pair items


def make_pair_item(cond_image: np.ndarray, target_image: np.ndarray, cond_pose, target_pose,
                   mask_kwargs: Optional[Mapping[str, Any]] = None, skeletons: bool = False) -> Dict[str, Any]:
    """The item layout shared by PennAction, SDFPairs and ToyPoses.

    cond_image, target_image: uint8 (S, S, 3) RGB; cond_pose, target_pose: valid (13, 3) poses in
    their pixels. Returns "image" / "cond_image" float32 (S, S, 3) in [-1, 1], "pose" /
    "cond_pose" float32 (13, 3) normalised (`normalise_pose`), "pose_px" / "cond_pose_px" float32
    (13, 3) in pixels (invisible joints at 0, 0), "mask" float32 (S, S, 1) = pair_mask(cond, target);
    with `skeletons` also "cond_skeleton" / "target_skeleton" float32 (S, S, 1) in {0, 1}.
    """
    height, width = target_image.shape[:2]
    if cond_image.shape != target_image.shape:
        raise ValueError(f"cond_image {cond_image.shape} and target_image {target_image.shape} differ in shape")
    kwargs = check_mask_kwargs(mask_kwargs)
    cond_pose = check_pose(cond_pose, height, width, "cond_pose")
    target_pose = check_pose(target_pose, height, width, "target_pose")
    for pose in (cond_pose, target_pose):
        pose[pose[:, 2] == 0, :2] = 0.0  # invisible joints hold no coordinates in items
    item = {
        "image": target_image.astype(np.float32) / 127.5 - 1.0,
        "cond_image": cond_image.astype(np.float32) / 127.5 - 1.0,
        "pose": normalise_pose(target_pose, height, width),
        "cond_pose": normalise_pose(cond_pose, height, width),
        "pose_px": target_pose,
        "cond_pose_px": cond_pose,
        "mask": pair_mask(cond_pose, target_pose, height, width, **kwargs)[:, :, None],
    }
    if skeletons:
        pen = {"limb_width": kwargs["limb_width"], "joint_radius": kwargs["joint_radius"]}
        for key, pose in (("cond_skeleton", cond_pose), ("target_skeleton", target_pose)):
            item[key] = render_skeleton(pose, height, width, **pen).astype(np.float32)[:, :, None]
    return item


def check_choice(what: str, value, options: Sequence) -> Any:
    """`value` if it is one of `options`, else ValueError naming `what` and the options."""
    if value not in options:
        raise ValueError(f"{what} must be one of {tuple(options)}, got {value!r}")
    return value
