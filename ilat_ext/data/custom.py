"""Upstream taming's own-data datasets, `taming.data.custom.CustomTrain` / `CustomTest`.

Upstream's README trains a VQGAN on your own images with `configs/custom_vqgan.yaml`, whose data
section names these two classes over text files of image paths. The PyPI `taming-transformers`
package has no `taming/data/custom.py` (and its `taming.data.base` needs albumentations), so
`ilat_ext.util.get_obj_from_str` resolves the upstream names to this module. Same constructor and
parameter names as upstream, same items:

    {"image": float32 (size, size, 3) in [-1, 1], "file_path_": str}

Preprocessing as upstream's `ImagePaths`: RGB; the shorter side rescaled to `size` (bilinear, as
albumentations' `SmallestMaxSize`), then a centre crop to (size, size); `size=None` or 0 keeps
the image as it is. Upstream crops the centre for training too; `random_crop=True` crops at a random
place instead (an option of ours, off by default so that upstream configs train as they did).

What is added: the list file (or folder) and every image it names are checked when the dataset is
built, and a missing one raises `DataFilesMissing` naming it and what to put there (main.py builds
the data before it creates the run folder, and reports it in one line). Relative paths in a list
are read from the current directory, as upstream; blank lines are skipped.
"""
import os
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ilat_ext.data.checks import DataFilesMissing, check_item_index

# Upstream lists .png, .jpg and .jpeg files when given a folder.
FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _list_hint(parameter: str, path: str) -> str:
    return (f"{parameter} {path!r} not found: put there a text file with one image path per line (e.g. "
            f"`find $(pwd)/your_images -name '*.jpg' > {path}`), or set {parameter} to a folder of "
            f"{'/'.join(FOLDER_EXTENSIONS)} images")


def read_image_list(path: str, parameter: str) -> List[str]:
    """The image paths named by `path`: a text file with one path per line, or a folder (its
    .png/.jpg/.jpeg files, sorted; upstream's listing order is the filesystem's). Raises
    `DataFilesMissing` naming `parameter` when the list, or an image it names, is missing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        paths = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(FOLDER_EXTENSIONS))
    elif os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            paths = [line.strip() for line in f.read().splitlines() if line.strip()]
    else:
        raise DataFilesMissing(_list_hint(parameter, path))
    if not paths:
        raise DataFilesMissing(f"{parameter} {path!r} names no images: list one image path per line")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataFilesMissing(f"{len(missing)} of the {len(paths)} images in {parameter} {path!r} are missing: "
                               f"{shown} (relative paths are read from the current directory {os.getcwd()!r})")
    return paths


def rescale_and_crop(image: np.ndarray, size: Optional[int], random_crop: bool = False,
                     rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): the shorter side to `size`, then a centre (or random)
    square crop; unchanged for `size` None or 0.

    >>> rescale_and_crop(np.zeros((20, 40, 3), np.uint8), 10).shape
    (10, 10, 3)
    """
    if not size:
        return image
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    if random_crop:
        rng = rng if rng is not None else np.random.default_rng(np.random.randint(2 ** 31))
        top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
    else:
        top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


class CustomBase(Dataset):
    """Images at `paths` as upstream's `ImagePaths` items (see the module docstring).

    Args:
        paths (sequence of str): image files.
        size (int, defaults to None): side of the square crop; None or 0 keeps the image.
        random_crop (bool, defaults to False): crop at a random place instead of the centre.
    """

    def __init__(self, paths: Sequence[str] = (), size: Optional[int] = None, random_crop: bool = False):
        super().__init__()
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(f"size must be a positive integer or None, got {size!r}")
        self.paths = list(paths)
        self.size = size
        self.random_crop = bool(random_crop)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[check_item_index(index, len(self), type(self).__name__)]
        with Image.open(path) as image:
            image = np.asarray(image.convert("RGB"), dtype=np.uint8)
        image = rescale_and_crop(image, self.size, self.random_crop)
        return {"image": (image / 127.5 - 1.0).astype(np.float32), "file_path_": path}


class CustomTrain(CustomBase):
    """Upstream's training split: the images named by `training_images_list_file` (a text file of
    image paths, one per line, or a folder of images), cropped to `size`."""

    def __init__(self, size: Optional[int], training_images_list_file: str, random_crop: bool = False):
        super().__init__(read_image_list(training_images_list_file, "training_images_list_file"), size, random_crop)


class CustomTest(CustomBase):
    """Upstream's validation/test split: the images named by `test_images_list_file`, centre-cropped
    to `size`."""

    def __init__(self, size: Optional[int], test_images_list_file: str, random_crop: bool = False):
        super().__init__(read_image_list(test_images_list_file, "test_images_list_file"), size, random_crop)
