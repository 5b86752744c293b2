"""Pose geometry for pose-guided person synthesis: Penn Action's 13 joints, skeletons, pose masks,
and limbs on a grid (where the skeleton lies, where each cell comes from when the limbs move).

iLAT (Cao et al., NeurIPS 2021), Sec. 3.3 "Non-iconic posed-guiding": the condition is a picture of
the person in one pose plus the 13 target-pose landmarks (fed to a PointMLP); the region to
regenerate is "the union of conditional and target masks got by dilating the poses with different
kernel sizes according to the scenes". The authors never released that mask builder; this module
is our reading of it, as small pure functions (numpy for pixel masks, torch for the grid
functions the models call). Nothing here reads files or knows a dataset.

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

On a grid (a token grid or the pixel grid), a pose is normalised: (B, 13, 3) [x / W, y / H,
visibility] (`normalise_pose`). `limb_map` says where each limb lies (the pose model's `pose_map`),
`limb_warp` where each cell of the target pose comes from in the reference pose, and `warp_image`
moves a reference picture's limbs to the target pose with it (the pose model's `warp_reference`).

Worked example (a 4 x 4 grid; the left forearm hangs down in the reference and points right in
the target; every other joint is hidden, so only that limb counts)::

    >>> import torch
    >>> ref = torch.zeros(1, 13, 3); tgt = torch.zeros(1, 13, 3)
    >>> ref[0, L_ELBOW] = torch.tensor([0.125, 0.125, 1]); ref[0, L_WRIST] = torch.tensor([0.125, 0.875, 1])
    >>> tgt[0, L_ELBOW] = torch.tensor([0.125, 0.125, 1]); tgt[0, L_WRIST] = torch.tensor([0.875, 0.125, 1])
    >>> limb_map(tgt, 4, 4, reach=1.0)[0, LIMBS.index((L_ELBOW, L_WRIST))]   # the target forearm: row 0
    tensor([[1., 1., 1., 1.],
            [0., 0., 0., 0.],
            [0., 0., 0., 0.],
            [0., 0., 0., 0.]])
    >>> source, weight = limb_warp(tgt, ref, 4, 4, reach=1.0)
    >>> source[0, :4].tolist(), weight[0, :4].tolist()   # row 0 comes from column 0, top to bottom
    ([0, 4, 8, 12], [1.0, 1.0, 1.0, 1.0])
    >>> image = torch.arange(16.).view(1, 1, 4, 4)      # each pixel holds its own index
    >>> warp_image(image, tgt, ref, reach=1.0)[0, 0, 0].tolist()
    [0.0, 4.0, 8.0, 12.0]
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import cv2
import numpy as np
import torch

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

# Defaults of the pose mask; `check_mask_kwargs` accepts exactly these keys.
DEFAULT_MASK_KWARGS: Dict[str, float] = {
    "scale": 0.2, "min_kernel": 3, "max_kernel": 81, "limb_width": 3, "joint_radius": 3,
}

_SHIFT = 4  # cv2 fractional bits: sub-pixel joint positions when drawing
_ONE = 1 << _SHIFT


# -------------------------------------------------------------------------------------- checks


def check_image_size(height, width) -> Tuple[int, int]:
    for what, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(height), int(width)


def pose_array(pose, name: str) -> np.ndarray:
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
    height, width = check_image_size(height, width)
    array = pose_array(pose, name)
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
    height, width = check_image_size(height, width)
    array = pose_array(pose, name).copy()
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


# ------------------------------------------------------------------------------- limbs on a grid


def _limb_frames(pose: torch.Tensor, h: int, w: int):
    """Each limb of pose (B, 13, 3) on an h x w grid, in cells: start a (B, K, 2), unit direction u
    (+x for a zero-length limb), normal n (u turned by 90 degrees), length (B, K) and whether both
    ends are visible (B, K)."""
    pose = torch.as_tensor(pose, dtype=torch.float32)
    if pose.dim() != 3 or pose.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"pose of shape {tuple(pose.shape)} must be (B, {NUM_JOINTS}, 3)")
    device = pose.device
    a_idx = torch.tensor([a for a, _ in LIMBS], device=device)
    b_idx = torch.tensor([b for _, b in LIMBS], device=device)
    scale = torch.tensor([float(w), float(h)], device=device)
    a, b = pose[:, a_idx, :2] * scale, pose[:, b_idx, :2] * scale
    length = (b - a).norm(dim=-1)
    unit = torch.where(length[..., None] > 1e-6, (b - a) / length.clamp_min(1e-6)[..., None],
                       torch.tensor([1.0, 0.0], device=device))
    normal = torch.stack([-unit[..., 1], unit[..., 0]], dim=-1)
    visible = (pose[:, a_idx, 2] > 0) & (pose[:, b_idx, 2] > 0)
    return a, unit, normal, length, visible


def _cell_coordinates(a, unit, normal, length, h: int, w: int):
    """Every cell centre (q + 0.5, r + 0.5) in each limb's frame: along s, beside d and the nearest
    point's place along the limb on = clamp(s, 0, length), each (B, K, h*w)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=a.device, dtype=torch.float32) + 0.5,
                            torch.arange(w, device=a.device, dtype=torch.float32) + 0.5, indexing="ij")
    offset = torch.stack([xs, ys], dim=-1).view(1, 1, h * w, 2) - a[:, :, None]          # (B, K, L, 2)
    s = (offset * unit[:, :, None]).sum(-1)
    d = (offset * normal[:, :, None]).sum(-1)
    return s, d, torch.minimum(s.clamp_min(0), length[..., None])


def _cover(s, d, on, visible, reach: float) -> torch.Tensor:
    """max(0, 1 - distance to the limb / reach), 0 for a limb with an invisible end: (B, K, L)."""
    distance = torch.sqrt((s - on) ** 2 + d ** 2)
    return (1 - distance / reach).clamp_min(0) * visible[..., None]


def limb_map(pose: torch.Tensor, h: int, w: int, reach: float = 1.0) -> torch.Tensor:
    """Where the skeleton's limbs are on an h x w token grid: pose (B, 13, 3) normalised [x/W, y/H,
    visibility] -> (B, len(LIMBS), h, w). Channel k of cell (r, q) is max(0, 1 - d / reach) with d the
    distance, in cells, from the cell's centre (q + 0.5, r + 0.5) to limb k's segment: 1 on the
    limb, 0 from `reach` cells away, and 0 everywhere for a limb with an invisible end."""
    a, unit, normal, length, visible = _limb_frames(pose, h, w)
    cover = _cover(*_cell_coordinates(a, unit, normal, length, h, w), visible, reach)
    return cover.view(a.shape[0], len(LIMBS), h, w)


def limb_warp(target: torch.Tensor, reference: torch.Tensor, h: int, w: int,
              reach: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where each target-pose grid cell comes from in the reference frame, limb by limb.

    target, reference: (B, 13, 3) normalised poses [x/W, y/H, visibility] of the same person ->
    (source (B, h*w) long, weight (B, h*w) float). Cell j (centre p, in cells) belongs to the limb
    whose `limb_map` cover max(0, 1 - d / reach) is largest there (the first such limb on a tie),
    counting only limbs visible in both poses; weight is that cover (0: no limb near j, source j).
    In the limb's frame p = a_t + s u_t + d n_t (u_t along the target segment a_t -> b_t, n_t its
    normal u_t turned by 90 degrees); the point along the segment moves to the same fraction of the
    reference segment, what lies beyond an end or beside the limb keeps its distance in cells:

        q = a_r + (clamp(s, 0, |t|) / |t| * |r| + s - clamp(s, 0, |t|)) u_r + d n_r

    and source is the reference cell that holds q (clamped to the grid). A zero-length segment
    counts as pointing along +x. Example: a forearm raised from pointing down to pointing right
    sends the cells along the raised forearm to the cells the hanging forearm covers."""
    frames = {}
    for name, pose in (("target", target), ("reference", reference)):
        try:
            frames[name] = _limb_frames(torch.as_tensor(pose, dtype=torch.float32), h, w)
        except ValueError as err:
            raise ValueError(f"{name} {err}") from None
    (a_t, u_t, n_t, len_t, vis_t), (a_r, u_r, n_r, len_r, vis_r) = frames["target"], frames["reference"]
    if a_t.shape[0] != a_r.shape[0]:
        raise ValueError(f"{a_t.shape[0]} target poses but {a_r.shape[0]} reference poses")
    a_r, u_r, n_r, len_r = (t.to(a_t.device) for t in (a_r, u_r, n_r, len_r))
    s, d, on = _cell_coordinates(a_t, u_t, n_t, len_t, h, w)                          # (B, K, L) each
    weight, limb = _cover(s, d, on, vis_t & vis_r.to(vis_t.device), reach).max(dim=1)  # (B, L)

    def pick(t):  # (B, K) or (B, K, L) -> the chosen limb's entry per cell, (B, L)
        t = t if t.dim() == 3 else t[:, :, None].expand(-1, -1, h * w)
        return t.gather(1, limb[:, None]).squeeze(1)

    s, d, on, len_t, len_r = pick(s), pick(d), pick(on), pick(len_t), pick(len_r)
    frac = torch.where(len_t > 1e-6, on / len_t.clamp_min(1e-6), torch.zeros_like(on))
    along = frac * len_r + (s - on)
    q = torch.stack([pick(a_r[..., i]) + along * pick(u_r[..., i]) + d * pick(n_r[..., i]) for i in (0, 1)],
                    dim=-1)                                                            # (B, L, 2)
    col = q[..., 0].floor().clamp(0, w - 1).long()
    row = q[..., 1].floor().clamp(0, h - 1).long()
    cells = torch.arange(h * w, device=row.device).expand_as(row)
    return torch.where(weight > 0, row * w + col, cells), weight


def warp_image(image: torch.Tensor, target: torch.Tensor, reference: torch.Tensor,
               reach: float) -> torch.Tensor:
    """image (B, C, H, W) of a person posed `reference` -> the person's limbs moved to the `target`
    pose, pixel by pixel: each pixel within `reach` pixels of a target limb (visible in both poses)
    takes the image's pixel that `limb_warp` on the H x W pixel grid maps it to; every other pixel
    stays as it is (the old limbs included). Poses (B, 13, 3) normalised [x/W, y/H, visibility]."""
    if image.dim() != 4:
        raise ValueError(f"image of shape {tuple(image.shape)} must be (B, C, H, W)")
    B, C, H, W = image.shape
    source, _ = limb_warp(target, reference, H, W, reach)
    if source.shape[0] != B:
        raise ValueError(f"{source.shape[0]} poses for {B} images")
    flat = image.flatten(2)
    return flat.gather(2, source.to(image.device)[:, None].expand(-1, C, -1)).view_as(image)
