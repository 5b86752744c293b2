"""Fixed 2D sinusoidal position codes: one function places grid cells and pose landmarks alike, so
"which cells does this limb cross" is a match of codes (the transformers' `pos_emb_init: grid`
and the pose model's `joint_position_codes`)."""
import math
from typing import Optional

import torch


def position_codes(y: torch.Tensor, x: torch.Tensor, dim: int, cells: int, std: float = 0.02) -> torch.Tensor:
    """2D sinusoidal codes (..., dim) of points at NORMALISED image coordinates y, x (..., in [0, 1]):
    half the channels encode y, half x, each as sin/cos pairs with wavelengths from 2 cells of a
    `cells`-wide grid to 2 image heights (geometric), scaled to standard deviation `std` (minGPT's
    embedding scale)."""
    if dim < 4 or dim % 4:
        raise ValueError(f"position codes need n_embd divisible by 4, got {dim}")
    n_freq = dim // 4
    wavelengths = torch.logspace(math.log10(2.0 / cells), math.log10(2.0), n_freq, dtype=torch.float64,
                                 device=y.device)
    angle_y = 2 * math.pi * y.double()[..., None] / wavelengths                      # (..., n_freq)
    angle_x = 2 * math.pi * x.double()[..., None] / wavelengths
    codes = torch.cat([angle_y.sin(), angle_y.cos(), angle_x.sin(), angle_x.cos()], dim=-1)
    return (codes * (std / math.sqrt(0.5))).float()


def grid_codes(h: int, w: int, dim: int, cells: Optional[int] = None, std: float = 0.02) -> torch.Tensor:
    """`position_codes` (h * w, dim) of the cell centres of an h x w grid in raster order; grids of
    different sizes over one image get matching codes at matching places when they share `cells`
    (default max(h, w))."""
    ys = ((torch.arange(h, dtype=torch.float64) + 0.5) / h)[:, None].expand(h, w)
    xs = ((torch.arange(w, dtype=torch.float64) + 0.5) / w)[None, :].expand(h, w)
    return position_codes(ys.reshape(-1), xs.reshape(-1), dim, cells or max(h, w), std)
