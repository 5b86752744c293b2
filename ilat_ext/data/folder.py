"""Images from a folder or a file list (the iLAT release's `flist`: one path per line)."""
import os
import warnings
from typing import List, Optional

import cv2
import numpy as np
from torch.utils.data import Dataset

from ilat_ext.data.image_files import IMAGE_EXTENSIONS, center_square, decode_image, resize_square
from ilat_ext.data.sketch import release_sketch, sketch_to_tensor_layout


def find_images(folder: str, what: str = "image folder", extensions=IMAGE_EXTENSIONS) -> List[str]:
    """Sorted image paths under `folder` (recursive). Raises naming `what` and the path."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} not found: {folder!r}")
    paths = sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names
                   if n.lower().endswith(extensions))
    if not paths:
        raise ValueError(f"no images ({', '.join(extensions)}) in {what} {folder!r}")
    return paths


def read_flist(flist: str, what: str = "file list", base: Optional[str] = None) -> List[str]:
    """Paths in a release-style `flist` (one per line; blank and '#' lines ignored); relative paths
    are resolved against `base` or else the list's folder. Raises naming `what` and the path."""
    flist = os.fspath(flist)
    if not os.path.isfile(flist):
        raise FileNotFoundError(f"{what} not found: {flist!r}")
    base = base or os.path.dirname(os.path.abspath(flist))
    with open(flist, encoding="utf-8") as f:
        names = [line.strip() for line in f]
    paths = [n if os.path.isabs(n) else os.path.join(base, n) for n in names if n and not n.startswith("#")]
    if not paths:
        raise ValueError(f"{what} {flist!r} lists no files")
    return paths


def list_images(root: Optional[str] = None, flist: Optional[str] = None) -> List[str]:
    """Images under `root`, or listed in `flist` (relative to `root` if given, else to the list)."""
    if root is None and flist is None:
        raise ValueError("give root= (a folder) or flist= (a file list)")
    return read_flist(flist, base=root) if flist is not None else find_images(root)


def read_rgb(path: str, size: Optional[int] = None) -> Optional[np.ndarray]:
    """uint8 (H, W, 3) RGB, centre-cropped to a square and resized to `size`; None if unreadable."""
    image = decode_image(path, cv2.IMREAD_COLOR)
    if image is None:
        return None
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is not None:
        image = resize_square(image, size)
    return image


class ImageFolder(Dataset):
    """`{"image": float32 (size, size, 3) in [-1, 1]}` from a folder or a file list; with
    `sketch=True` also `"sketch"`: the release's sketch (`release_sketch`: XDoG with the release
    defaults on the source image, then resized), (size, size, 1), flipped with the image.

    An unreadable file is skipped (the next readable one is returned instead) and counted in
    `skipped`, with a warning that gives the running count: never a crash mid-epoch.
    """

    def __init__(self, root: Optional[str] = None, flist: Optional[str] = None, size: int = 256,
                 flip: bool = False, sketch: bool = False):
        self.paths = list_images(root, flist)
        self.sketch = sketch
        if int(size) < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        self.size = int(size)
        self.flip = flip
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            source = read_rgb(path)  # the release's sketch is XDoG at the source resolution, then resized
            image = None if source is None else resize_square(center_square(source), self.size)
            if image is not None:
                break
            self.skipped += 1
            warnings.warn(f"skipping unreadable image {path} ({self.skipped} skipped so far)")
        else:
            raise RuntimeError(f"none of the {len(self.paths)} images could be read")
        sketch = release_sketch(source, self.size) if self.sketch else None
        if self.flip and np.random.rand() < 0.5:
            image = np.ascontiguousarray(image[:, ::-1])
            sketch = None if sketch is None else np.ascontiguousarray(sketch[:, ::-1])
        item = {"image": (image.astype(np.float32) / 127.5 - 1.0), "path": path}
        if sketch is not None:
            item["sketch"] = sketch_to_tensor_layout(sketch)
        return item
