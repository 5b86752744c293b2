"""Pose files and pair items for pose-guided person synthesis: JSON pose files, square resizing of
frames with their poses, and the item layout the pose datasets share.

The geometry (joint tables, pose checks, skeletons, pose masks, normalisation, limbs on a grid)
is `ilat_ext.pose_geometry`.
"""
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ilat_ext.pose_geometry import JOINT_NAMES, NUM_JOINTS, check_image_size, check_mask_kwargs, check_pose, normalise_pose, pair_mask, pose_array, render_skeleton

RESIZE_MODES = ("stretch", "pad")


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


def unwrap_json(data, key: str, name: str):
    """data[key] of a JSON object (ValueError naming `name` when it has no such key), else data as it is."""
    if not isinstance(data, dict):
        return data
    if key not in data:
        raise ValueError(f"{name}: a JSON object needs a {key!r} key, found {sorted(data)}")
    return data[key]


def load_pose_json(path, height: int, width: int) -> np.ndarray:
    """Validated float32 (13, 3) pose from a JSON file for a (height, width) image.

    The file holds 13 [x, y, visibility] triples in Penn Action's order, as a plain list or as
    {"joints": [...], ...} (other keys are ignored). Visibility: 0/1 or false/true; any value > 0
    counts as visible (COCO's 2 too). Raises FileNotFoundError naming a missing path, ValueError
    naming the file for malformed JSON or an invalid pose (see `check_pose`).
    """
    path = os.fspath(path)
    data = read_json(path, "pose file")
    array = pose_from_list(unwrap_json(data, "joints", f"pose file {path!r}"), name=f"pose file {path!r}")
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
    out = np.array(pose_array(pose, "pose"), np.float64)
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
    height, width = check_image_size(height, width)
    size = check_image_size(size, size)[0]
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
