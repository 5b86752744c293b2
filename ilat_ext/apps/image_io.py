"""Image tensors and files for the apps: converting, writing, labelled grids, videos.

Reading the user's photos, masks and strokes, and pasting edits back into them, is
`ilat_ext.apps.photo_io`.

The apps (face editing, comparison, pose guiding, demos) share one convention: images inside the
library are float tensors (B, C, H, W) in [-1, 1] (C = 3 RGB, or 1 for masks and sketches), images
on disk and in NumPy are uint8 (H, W, 3) RGB. One converter goes each way:

    >>> import torch
    >>> x = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 1, 1, 3)     # (B, C, H, W) = (1, 1, 1, 3)
    >>> tensor_to_uint8(x).reshape(-1).tolist()                     # (B, H, W, C) uint8, rounded
    [0, 128, 255]
    >>> tensor_to_uint8(x, rgb=True).shape                          # a gray channel repeated
    (1, 1, 3, 3)
    >>> uint8_to_tensor(tensor_to_uint8(x)).reshape(-1).tolist()    # the inverse (x / 127.5 - 1)
    [-1.0, 0.003921627998352051, 1.0]
"""
import os
from typing import Mapping, Optional

import cv2
import numpy as np
import torch

from ilat_ext.data.image_files import write_image_atomic

# ------------------------------------------------------------------------------------ converters


def tensor_to_uint8(images: torch.Tensor, rgb: bool = False) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C), rounded (the inverse of `uint8_to_tensor`).
    rgb: a one-channel image is repeated into 3 channels (a mask or sketch shown as RGB)."""
    if images.dim() != 4:
        raise ValueError(f"images of shape {tuple(images.shape)} must be (B, C, H, W)")
    if rgb and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    images = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return images.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, C) or (H, W, C) -> float (B, C, H, W) in [-1, 1] (x / 127.5 - 1)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images of shape {images.shape} must be (B, H, W, C) or (H, W, C)")
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def rgb_frames(frames) -> np.ndarray:
    """Frames as uint8 (N, H, W, 3) RGB: a (N, 3, H, W) tensor in [-1, 1] is converted, a uint8
    array checked. ValueError for anything else or N = 0."""
    frames = tensor_to_uint8(frames) if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) or a (N, 3, H, W) tensor in [-1, 1], N >= 1; "
                         f"got {frames.dtype} {frames.shape}")
    return frames


# ----------------------------------------------------------------------------------------- write


def write_rgb(path: str, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) RGB image (or (H, W) gray) atomically; format from the extension."""
    write_image_atomic(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)


def labelled_grid(columns: Mapping[str, torch.Tensor], path: Optional[str] = None, pad: int = 2,
                  min_tile: int = 0) -> np.ndarray:
    """A labelled side-by-side grid: one column per entry (its name written above it), one row per
    batch element. Each value is (B, C, H, W) in [-1, 1] with C = 1 or 3 (a mask: pass mask * 2 - 1).
    Images narrower than `min_tile` are enlarged by the smallest integer factor that reaches it
    (nearest neighbour, so pixels stay visible).

    Returns the uint8 (header + B*H + (B-1)*pad, n*W + (n-1)*pad, 3) RGB grid (H, W after any
    enlarging) and writes it to `path` (format from the extension) if given.
    """
    if not columns:
        raise ValueError("labelled_grid needs at least one column")
    names = list(columns)
    shapes = {name: tuple(t.shape) for name, t in columns.items()}
    first = shapes[names[0]]
    for name, shape in shapes.items():
        if len(shape) != 4 or shape[1] not in (1, 3) or (shape[0],) + shape[2:] != (first[0],) + first[2:]:
            raise ValueError(f"grid columns must be (B, 1 or 3, H, W) of one B, H, W; got {shapes}")
    factor = -(-int(min_tile) // first[3]) if min_tile > first[3] else 1
    if factor > 1:
        columns = {name: t.float().repeat_interleave(factor, 2).repeat_interleave(factor, 3)
                   for name, t in columns.items()}
        first = first[:2] + (first[2] * factor, first[3] * factor)
    B, _, H, W = first
    tiles = {name: tensor_to_uint8(t, rgb=True) for name, t in columns.items()}
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max(cv2.getTextSize(name, font, 1.0, 1)[0][0] for name in names)
    scale = min(1.0, 0.9 * W / max(1, widest))
    sizes = [cv2.getTextSize(name, font, scale, 1) for name in names]
    text_h, below = max(s[0][1] for s in sizes), max(s[1] for s in sizes)
    margin = max(2, text_h // 3)
    header = text_h + below + 2 * margin
    grid = np.full((header + B * H + (B - 1) * pad, len(names) * W + (len(names) - 1) * pad, 3), 255, np.uint8)
    for j, name in enumerate(names):
        x0 = j * (W + pad)
        tw = cv2.getTextSize(name, font, scale, 1)[0][0]
        cv2.putText(grid, name, (x0 + max(0, (W - tw) // 2), margin + text_h), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        for i in range(B):
            y0 = header + i * (H + pad)
            grid[y0:y0 + H, x0:x0 + W] = tiles[name][i]
    if path is not None:
        write_rgb(path, grid)
    return grid


def write_gif(path: str, frames, fps: float = 4.0) -> None:
    """An animated GIF (looping) of frames: uint8 (N, H, W, 3) RGB or a (N, 3, H, W) tensor in [-1, 1].
    Pillow stores a frame identical to the one before it as a longer display of that frame."""
    from PIL import Image

    frames = rgb_frames(frames)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(os.fspath(path), save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, disposal=1)


def write_mp4(path: str, frames, fps: float = 4.0) -> bool:
    """An MP4 (OpenCV, mp4v) of frames as for `write_gif`. Returns False, writing nothing, when
    OpenCV cannot open a writer for it (a build without the codec)."""
    frames = rgb_frames(frames)
    H, W = frames.shape[1:3]
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        writer.release()
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            os.remove(path)
        return False
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return True
