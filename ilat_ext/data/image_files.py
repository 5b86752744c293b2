"""Small image-file helpers shared by the data modules: tolerant decoding, the square crop and
resize every face dataset uses, and atomic PNG writes.

Kept apart from `folder.py` and `sketch.py` so both can use them (`folder.py` imports `sketch.py`).

Worked example::

    >>> img = np.zeros((40, 60, 3), np.uint8)
    >>> center_square(img).shape, resize_square(img, 16).shape
    ((40, 40, 3), (16, 16, 3))
"""
import os
import tempfile
from typing import Optional

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
TEMP_PREFIX = ".tmp-"  # partial writes are named like this until os.replace


def decode_image(path: str, flags: int = cv2.IMREAD_COLOR) -> Optional[np.ndarray]:
    """cv2 image read from `path` with `flags`, or None if the file is missing, empty or not an image.

    np.fromfile + imdecode rather than imread: works with non-ASCII paths and never raises.
    """
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
        image = cv2.imdecode(data, flags) if data.size else None
    except (OSError, ValueError, cv2.error):
        return None
    if image is None or image.size == 0:
        return None
    return image


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an (H, W) or (H, W, C) image (a view, no copy)."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top:top + s, left:left + s]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to (size, size): INTER_AREA when shrinking, INTER_CUBIC
    when enlarging; the crop, made contiguous, when already (size, size)."""
    image = center_square(image)
    s = image.shape[0]
    if s == size:
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(image, (int(size), int(size)), interpolation=interp)


def write_image_atomic(path: str, image: np.ndarray) -> None:
    """Write `image` (cv2 channel order) to `path`, format from the extension, atomically.

    The bytes go to a temporary file in the same folder (named `TEMP_PREFIX`...), then
    `os.replace` moves it over `path`: a reader (or a resumed run) sees the old file or the
    complete new one, never a half-written one. Creates missing parent folders.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ok, encoded = cv2.imencode(os.path.splitext(path)[1] or ".png", image)
    if not ok:
        raise ValueError(f"cv2 could not encode an image of shape {image.shape} for {path!r}")
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; datasets are usually shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
