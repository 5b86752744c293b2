"""Pose-guided person synthesis from a trained run: the library half of `ilat-pose-guide` (scripts/pose_guide.py).

iLAT (Cao et al., "The Image Local Autoregressive Transformer", NeurIPS 2021, Sec. 3.3 and Fig. 6)
redraws the person of a reference image in a target pose: the region regenerated is the union of
the reference pose's and the target pose's dilated masks (`ilat_ext.data.pose.pair_mask`), the
target pose enters through the PointMLP, and Eq. 4 decoding keeps the reference's features outside
the mask's latent cells, so the background stays the reference's. A sequence of target poses (a
Penn Action video's labels, say) gives an animation, one synthesis per pose, all from the one
reference.

    run = load_pose_model("logs/<pose run>", device="cpu")
    reference, photo = read_reference("ref.jpg", run.size, run.resize)     # photo: the file at its own size
    h, w = photo.shape
    ref = resize_pose(read_pose("ref.json", h, w), h, w, run.size, run.resize)
    targets = [resize_pose(read_pose(("video.mat", k), h, w), h, w, run.size, run.resize) for k in (1, 5, 9)]
    frames, masks = synthesize_sequence(run.model, reference, ref, targets, batch_size=8)
    write_gif("walk.gif", frames); write_strip("strip.png", frames, targets)    # gif: ilat_ext.apps.image_io
    pasted = blend_into_reference(frames, reference, masks, feather=2)    # the reference's pixels outside
    full = paste_into_photo(frames, photo.rgb, masks, run.resize)         # the same at the photo's size

Conventions. Poses are (13, 3) [x, y, visibility] in pixels with the origin at the image's top-left
corner (`ilat_ext.data.pose`). A pose read from a file is in the ORIGINAL reference image's pixels;
`resize_pose` moves it into the model's square frame exactly as `resize_image` moves the pixels
("stretch" unless the run's training data says "pad"). A Penn Action label file's coordinates are
taken as pixels of the reference image too (so its target poses should come from the reference's
own video, or one with the same frame size). JSON poses are checked strictly: a visible joint
outside the image is an error naming it. Label rows are cleaned as `PennAction` cleans them (real
annotations put joints past the frame's edge): such joints are hidden, with a warning.
"""
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from ilat_ext.apps.image_io import rgb_frames, tensor_to_uint8, uint8_to_tensor, write_rgb
from ilat_ext.apps.photo_io import (DEFAULT_MAX_PIXELS, Photo, blend_inside, default_feather, feather_map, read_photo,
                                    resize_to)
from ilat_ext.data.pose import load_pose_json, pose_from_list, resize_image
from ilat_ext.pose_geometry import JOINT_NAMES, NUM_JOINTS, check_pose, clean_pose, draw_skeleton_overlay
from ilat_ext.runs import check_input_size, load_run, model_input_size, resize_mode_of

PoseSource = Union[str, os.PathLike, Tuple[Union[str, os.PathLike], int]]


# ------------------------------------------------------------------------------------- model


@dataclass
class PoseRun:
    """A loaded pose run: the model (on its device, eval mode), the image side it takes, how the
    run's training frames were made square ("stretch" or "pad"), and the run's config."""

    model: Any  # PoseILATTransformer
    size: int
    resize: str
    config: Any
    run: str


def load_pose_model(run: str, device: str = "cpu", baseline: bool = False, unsafe: Optional[bool] = None) -> PoseRun:
    """Load `logs/<run>` (or a checkpoint in it) for pose-guided synthesis.

    baseline: the run must be the vanilla-AR baseline (a PoseILATTransformer trained with lm_rate 1,
    whose `synthesize(mode="edit")` is Taming's edit).

    Raises FileNotFoundError (no such run, checkpoint or saved config) or ValueError (the model is
    not a PoseILATTransformer; a baseline whose lm_rate is below 1; a size the transformer cannot take).
    """
    from ilat_ext.models.pose_transformer import PoseILATTransformer

    model, config = load_run(run, unsafe=unsafe)
    target = (getattr(model, "build_config", None) or {}).get("target", type(model).__name__)
    if not isinstance(model, PoseILATTransformer):
        raise ValueError(f"run {run!r} holds a {target}, not a PoseILATTransformer: pose-guided synthesis needs a "
                         "pose run (configs/toy/ilat_pose.yaml, configs/toy/taming_pose.yaml)")
    if baseline and not model.trained_causal:
        raise ValueError(f"baseline run {run!r} was trained with lm_rate {model.lm_rate}: the Taming baseline must be "
                         "a vanilla-AR pose run with lm_rate 1.0 (configs/toy/taming_pose.yaml)")
    model.to(device)
    size = model_input_size(model, config)
    check_input_size(model, size, exact=True)
    return PoseRun(model, size, resize_mode_of(config), config, run)


# -------------------------------------------------------------------------------------- inputs


def read_reference(path: str, size: int, resize: str = "stretch",
                   max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Tuple[torch.Tensor, Photo]:
    """The reference photo as the model takes it, and as it is: ((1, 3, size, size) float in
    [-1, 1], the `photo_io.Photo` read at its own size, any format, EXIF applied, at most
    `max_pixels`). Raises FileNotFoundError / `photo_io.InputError` naming the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference image not found: {path!r}")
    photo = read_photo(path, "reference image", max_pixels, min_side=size)
    square = resize_image(photo.rgb, size, resize)
    return uint8_to_tensor(square), photo


def label_poses(path: str) -> np.ndarray:
    """float64 (nframes, 13, 3) raw poses of a Penn Action .mat label file.
    Raises FileNotFoundError naming a missing file, ValueError a malformed one."""
    from ilat_ext.data.penn_action import read_label

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path!r}")
    return read_label(path)["poses"]


def label_pose(poses: np.ndarray, frame: int, height: int, width: int, path: str = "label") -> np.ndarray:
    """Frame `frame` (1-based, as Penn Action numbers its jpgs) of `label_poses(path)`, cleaned for a
    (height, width) image: joints outside it are hidden (with a warning). IndexError if out of range."""
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise ValueError(f"frame index must be an integer, got {frame!r}")
    if not 1 <= frame <= len(poses):
        raise IndexError(f"frame {frame} out of range for {path!r}: it has {len(poses)} frames "
                         f"(1-based: 1..{len(poses)})")
    name = f"{path!r} frame {frame}"
    pose, hidden = clean_pose(poses[frame - 1], height, width, name=name)
    if hidden:
        warnings.warn(f"{name}: {hidden} visible joint(s) outside the {width}x{height} image were hidden",
                      RuntimeWarning, stacklevel=2)
    return pose


def read_pose(source: PoseSource, height: int, width: int) -> np.ndarray:
    """A float32 (13, 3) pose in the pixels of a (height, width) image.

    source: a JSON file (`load_pose_json`: 13 [x, y, visibility], or {"joints": [...]}), checked
    strictly (a visible joint outside the image is a ValueError naming the joint); or
    (label .mat path, 1-based frame) (`label_pose`). Missing files -> FileNotFoundError."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(f"a label pose source is (label path, frame), got {source!r}")
        path, frame = source
        return label_pose(label_poses(path), frame, height, width, os.fspath(path))
    return load_pose_json(source, height, width)


def read_pose_list(path: str, height: int, width: int) -> List[np.ndarray]:
    """The poses of a JSON file holding a list of poses, or {"poses": [...]}; each pose is 13
    [x, y, visibility] triples or {"joints": [...]}. Checked like `read_pose`, naming the pose's index."""
    from ilat_ext.data.pose import read_json, unwrap_json

    path = os.fspath(path)
    data = unwrap_json(read_json(path, "pose list file"), "poses", f"pose list file {path!r}")
    if not isinstance(data, list) or not data:
        raise ValueError(f"pose list file {path!r} must hold a non-empty list of poses")
    poses = []
    for i, item in enumerate(data):
        name = f"pose list file {path!r}, pose {i}"
        array = pose_from_list(unwrap_json(item, "joints", name), name=name)
        if np.isnan(array[:, 2]).any():
            raise ValueError(f"{name}: visibility must be a number, found null")
        array[:, 2] = array[:, 2] > 0
        poses.append(check_pose(array, height, width, name=name))
    return poses


def parse_frames(spec: str, nframes: int) -> List[int]:
    """1-based frame numbers of "START:STOP[:STEP]" (STOP included, like MATLAB's START:STEP:STOP)
    or "A,B,C". ValueError for malformed specs, IndexError for frames outside 1..nframes."""
    spec = spec.strip()
    try:
        if ":" in spec:
            parts = [int(p) for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
            if step < 1 or stop < start:
                raise ValueError
            frames = list(range(start, stop + 1, step))
        else:
            frames = [int(p) for p in spec.split(",")]
    except ValueError:
        raise ValueError(f"frames {spec!r}: expected START:STOP[:STEP] (1-based, STOP included, STEP >= 1, "
                         "START <= STOP) or a comma-separated list") from None
    bad = [k for k in frames if not 1 <= k <= nframes]
    if bad:
        raise IndexError(f"frames {spec!r}: frame {bad[0]} out of range, the label file has {nframes} frames "
                         f"(1-based: 1..{nframes})")
    return frames


# ------------------------------------------------------------------------------------ synthesis


@torch.no_grad()
def synthesize_sequence(model, reference: torch.Tensor, ref_pose_px, target_poses_px: Sequence, batch_size: int = 8,
                        show_progress: bool = False, **sampling) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference's person redrawn in each target pose, `batch_size` poses per transformer batch.

    reference: (1, 3, H, W) or (3, H, W) in [-1, 1]; ref_pose_px: (13, 3) in its pixels;
    target_poses_px: N (13, 3) poses in the same pixels. `sampling`: `model.synthesize` keywords
    (mode "local" | "edit", greedy, temperature, top_k, seed, ...). A `seed` seeds ONE generator
    shared by all batches: batches do not repeat one draw, and a seeded sequence is reproducible
    for a given batch_size (not across batch sizes: a batch draws its elements together).
    Returns (frames (N, 3, H, W) in [-1, 1], union masks (N, 1, H, W) in {0, 1}), on the CPU.
    """
    from tqdm.auto import tqdm

    if reference.dim() == 3:
        reference = reference[None]
    if reference.dim() != 4 or reference.shape[:2] != (1, 3):
        raise ValueError(f"reference of shape {tuple(reference.shape)} must be (1, 3, H, W) or (3, H, W)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    targets = np.asarray(target_poses_px, np.float32)
    if targets.ndim == 2:
        targets = targets[None]
    if targets.ndim != 3 or targets.shape[1:] != (NUM_JOINTS, 3) or len(targets) == 0:
        raise ValueError(f"target poses of shape {targets.shape} must be (N, {NUM_JOINTS}, 3) with N >= 1 "
                         f"({', '.join(JOINT_NAMES)})")
    H, W = reference.shape[2:]
    ref = check_pose(ref_pose_px, H, W, "reference pose")
    sampling = dict(sampling)
    seed = sampling.pop("seed", None)
    if seed is not None and sampling.get("generator") is None:
        sampling["generator"] = torch.Generator(device=model.device).manual_seed(int(seed))
    frames, masks = [], []
    with tqdm(total=len(targets), desc="synthesizing", unit="frame", disable=not show_progress) as bar:
        for start in range(0, len(targets), batch_size):
            tgt = targets[start:start + batch_size]                                  # (b, 13, 3)
            refs = np.repeat(ref[None], len(tgt), 0)
            mask = model.masks_for(refs, tgt, H, W)                                  # (b, 1, H, W)
            result = model.synthesize(reference.expand(len(tgt), -1, -1, -1), refs, tgt, mask=mask, **sampling)
            frames.append(result.image.float().cpu())
            masks.append(mask.float().cpu())
            bar.update(len(tgt))
    return torch.cat(frames), torch.cat(masks)


def outside_psnr(images: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB of images (N, 3, H, W) against the reference (1 or N, 3, H, W), both in
    [-1, 1], over the pixels outside the masks (N, 1, H, W): how well the background was kept."""
    from ilat_ext.metrics import psnr

    images, masks = images.float().cpu(), masks.float().cpu()
    reference = reference.float().cpu().expand_as(images)
    return psnr(images, reference, mask=1.0 - masks)


def feather_weights(masks: torch.Tensor, feather: float) -> torch.Tensor:
    """(N, 1, H, W) blending weights of the synthesis: 0 outside the masks (N, 1, H, W) in {0, 1},
    rising linearly with the distance from the nearest unmasked pixel to 1 at `feather` pixels
    inside (`photo_io.feather_map`; `feather` 0 gives the mask itself). The weights never leave the
    mask, so a blend keeps every pixel outside it."""
    if isinstance(feather, bool) or not isinstance(feather, (int, float)) or not feather >= 0:
        raise ValueError(f"feather must be a number of pixels >= 0, got {feather!r}")
    masks = masks.float().cpu()
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks of shape {tuple(masks.shape)} must be (N, 1, H, W)")
    weights = [feather_map(m, feather) for m in (masks[:, 0] > 0.5).numpy()]
    return torch.from_numpy(np.stack(weights)[:, None])


def blend_into_reference(frames: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor,
                         feather: float = 0.0) -> torch.Tensor:
    """The syntheses (N, 3, H, W) put back into the reference (1 or N, 3, H, W), both in [-1, 1]:
    the reference's own pixels outside the masks (N, 1, H, W), the synthesis inside, blended over
    `feather` pixels inside the mask's edge (`feather_weights`). What the release does with its
    feathered pixel blend, without touching a pixel outside the mask; Eq. 4 alone keeps the
    autoencoder's reconstruction of the background, which a small or short-trained autoencoder blurs."""
    frames = frames.float().cpu()
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames of shape {tuple(frames.shape)} must be (N, 3, H, W)")
    reference = reference.float().cpu()
    if reference.dim() == 3:
        reference = reference[None]
    if reference.shape[1:] != frames.shape[1:] or reference.shape[0] not in (1, frames.shape[0]):
        raise ValueError(f"reference of shape {tuple(reference.shape)} does not match frames {tuple(frames.shape)}")
    if masks.shape[0] != frames.shape[0] or masks.shape[2:] != frames.shape[2:]:
        raise ValueError(f"masks of shape {tuple(masks.shape)} do not match frames {tuple(frames.shape)}")
    alpha = feather_weights(masks, feather)
    return alpha * frames + (1.0 - alpha) * reference.expand_as(frames)


def frame_to_photo(image: np.ndarray, shape: Tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """A (S, S[, C]) array of the model's frame moved back onto an (H, W) photo: the inverse of
    `resize_image(photo, S, resize)` ("stretch": resized to (H, W); "pad": resized to the padded
    square, then the padding cut off). Lanczos when enlarging, area when shrinking; a float array
    (a mask) is resized linearly."""
    H, W = shape
    side = max(H, W)
    out_h, out_w = (H, W) if resize == "stretch" else (side, side)
    if image.dtype == np.uint8:
        out = resize_to(image, (out_h, out_w))
    else:
        out = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    if resize == "pad":
        top, left = (side - H) // 2, (side - W) // 2
        out = out[top:top + H, left:left + W]
    return np.ascontiguousarray(out)


def paste_into_photo(frames: torch.Tensor, photo: np.ndarray, masks: torch.Tensor, resize: str = "stretch",
                     feather: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The syntheses at the reference photo's own resolution: each frame (N, 3, S, S) in [-1, 1] and
    its union mask (N, 1, S, S) moved onto the uint8 (H, W, 3) photo (`frame_to_photo`), the frame
    blended in inside the mask only, over `feather` photo pixels inside its edge (None: one model
    pixel). Returns (uint8 (N, H, W, 3) images whose pixels outside the masks are the photo's, bit
    for bit; bool (N, H, W) masks at the photo's size)."""
    H, W = photo.shape[:2]
    S = frames.shape[-1]
    feather = default_feather(max(H, W), S) if feather is None else feather
    images, full_masks = [], []
    for frame, mask in zip(tensor_to_uint8(frames), masks.float().cpu()[:, 0].numpy()):
        big_mask = frame_to_photo(mask.astype(np.float32), (H, W), resize) >= 0.5
        images.append(blend_inside(photo, big_mask, frame_to_photo(frame, (H, W), resize), feather))
        full_masks.append(big_mask)
    return np.stack(images), np.stack(full_masks)


# -------------------------------------------------------------------------------------- output


def skeleton_pen(height: int, width: int) -> dict:
    """`draw_skeleton_overlay` pen sizes readable at this image size (2 px limbs and 1 px joints at
    64 px, 6 and 4 at 256 px): the defaults' 3-px joint discs hide a 64-px figure's limbs."""
    side = min(height, width)
    return {"limb_width": max(2, side // 40), "joint_radius": max(1, side // 64)}


def skeleton_overlay(image: np.ndarray, pose) -> np.ndarray:
    """A copy of uint8 (H, W, 3) `image` with `pose` drawn on it at a pen size for its size."""
    return draw_skeleton_overlay(image, pose, **skeleton_pen(*image.shape[:2]))


def skeleton_images(poses: Iterable, height: int, width: int) -> np.ndarray:
    """uint8 (N, height, width, 3): each pose drawn in colour on black (`skeleton_overlay`)."""
    black = np.zeros((height, width, 3), np.uint8)
    return np.stack([skeleton_overlay(black, p) for p in poses])


def write_strip(path: Optional[str], frames, poses: Sequence, per_row: int = 8, pad: int = 2,
                reference: Optional[np.ndarray] = None, ref_pose=None) -> np.ndarray:
    """Paper Fig. 6's layout: odd rows (1st, 3rd, ...) the generated frames, each even row the
    guiding poses of the row above drawn as skeletons, `per_row` frames a row. With `reference`
    (uint8 (H, W, 3)) and `ref_pose` the first column is the reference over its own pose.

    frames: uint8 (N, H, W, 3) RGB or a (N, 3, H, W) tensor in [-1, 1]; poses: N (13, 3) poses in the frames' pixels. Returns the uint8 RGB
    strip and writes it to `path` (format from the extension) if given."""
    frames = rgb_frames(frames)
    N, H, W = frames.shape[:3]
    if len(poses) != N:
        raise ValueError(f"{N} frames but {len(poses)} poses")
    skeletons = skeleton_images(poses, H, W)
    if reference is not None:
        if ref_pose is None:
            raise ValueError("a strip's reference column needs the reference pose")
        frames = np.concatenate([reference[None], frames])
        skeletons = np.concatenate([skeleton_images([ref_pose], H, W), skeletons])
    per_row = max(1, min(int(per_row), len(frames)))
    rows = -(-len(frames) // per_row)
    strip = np.full((2 * rows * H + (2 * rows - 1) * pad, per_row * W + (per_row - 1) * pad, 3), 255, np.uint8)
    for k in range(len(frames)):
        r, c = divmod(k, per_row)
        x0, y0 = c * (W + pad), 2 * r * (H + pad)
        strip[y0:y0 + H, x0:x0 + W] = frames[k]
        strip[y0 + H + pad:y0 + 2 * H + pad, x0:x0 + W] = skeletons[k]
    if path is not None:
        write_rgb(os.fspath(path), strip)
    return strip
