"""Photo-like test inputs for the real-photo input/output layer (`ilat_ext.apps.photo_io`): smooth
gradients with texture at real sizes, masks at half resolution (antialiased, as paint layers),
strokes in both polarities and on transparent layers, EXIF-rotated JPEGs, and broken files."""
import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 (h, w, 3): three sine gradients at random angles plus blurred noise, like a photo's
    smooth regions and fine texture (nothing a codec or resize keeps exactly by accident)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    channels = []
    for _ in range(3):
        a, b, phase = rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(0, 2 * np.pi)
        channels.append(128 + 90 * np.sin(2 * np.pi * (a * xx + b * yy) + phase))
    base = np.stack(channels, -1)
    texture = cv2.GaussianBlur(rng.normal(0, 18, (h, w, 3)).astype(np.float32), (0, 0), 1.2)
    return np.clip(np.rint(base + texture), 0, 255).astype(np.uint8)


def save(path, array: np.ndarray, **kwargs) -> str:
    """Write an RGB / RGBA / gray uint8 array with Pillow (format from the extension)."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    Image.fromarray(array).save(os.fspath(path), **kwargs)
    return os.fspath(path)


def decoded(path) -> np.ndarray:
    """The file as Pillow shows it (EXIF orientation applied), uint8 RGB."""
    from PIL import ImageOps

    with Image.open(os.fspath(path)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB")).copy()


def ellipse_mask(h: int, w: int, center, axes, antialiased: bool = True) -> np.ndarray:
    """uint8 (h, w): a white ellipse on black, its edge antialiased (grey levels) when asked."""
    scale = 4 if antialiased else 1
    big = np.zeros((h * scale, w * scale), np.uint8)
    cv2.ellipse(big, (int(center[0] * scale), int(center[1] * scale)), (int(axes[0] * scale), int(axes[1] * scale)),
                0, 0, 360, 255, -1)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA) if scale > 1 else big


def paint_layer(gray_mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 (h, w, 4) RGBA: the mask as a paint layer, opacity = mask, the colour random
    everywhere (under transparent pixels too: it must not matter)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, gray_mask.shape + (3,), dtype=np.uint8)
    return np.concatenate([colour, gray_mask[:, :, None]], axis=2)


def strokes_light_on_dark(h: int, w: int, lines) -> np.ndarray:
    """uint8 (h, w): antialiased white lines on black, as the release's demo sketch files."""
    out = np.zeros((h, w), np.uint8)
    for (x0, y0), (x1, y1) in lines:
        cv2.line(out, (int(x0), int(y0)), (int(x1), int(y1)), 255, max(1, w // 256), cv2.LINE_AA)
    return out


def oversized_png_header(path, width: int, height: int) -> str:
    """A PNG whose header says width x height (8-bit RGB) with one tiny IDAT and IEND: decoding it
    in full would need width * height * 3 bytes; reading the header needs nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                + chunk(b"IEND", b""))
    return os.fspath(path)


def truncated_copy(src, dst, keep: float = 0.5) -> str:
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[:int(len(data) * keep)])
    return os.fspath(dst)


def jpeg_with_orientation(path, displayed: np.ndarray, orientation: int = 6, quality: int = 95) -> str:
    """A JPEG whose stored pixels are `displayed` rotated so that EXIF `orientation` (6: rotate 90
    degrees clockwise to display) shows `displayed` again."""
    assert orientation == 6
    stored = np.ascontiguousarray(np.rot90(displayed, 1))    # 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(os.fspath(path), quality=quality, exif=exif.tobytes())
    return os.fspath(path)
