"""Options of ours for the transformers, each group validated in one place (all off by default:
the paper's model is the default). What each does, why, and its measurements: docs/options.md.

- `ConditioningOptions` (Taming, iLAT, pose): `pos_emb_init: grid` starts the positions as 2D
  codes; `aligned_condition` adds to the row that predicts grid cell j an embedding of condition
  token j; `aligned_kernel: k` also gives that row the k x k condition cells around j.
- `PoseOptions` (pose model only): `joint_position_codes`, `pose_map`, `warp_reference`,
  `warp_reach`.
- `REMOVED_OPTIONS`: options that measurement superseded, refused with a message saying so.

The builders here (`build_aligned`, `aligned_features`, `init_grid_positions`) make and apply the
conditioning options' modules on a `TamingTransformer`; their parameters keep the names
`aligned_emb.*` / `aligned_conv.*` of existing checkpoints.
"""
import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ilat_ext.models.stages import stage_grid
from ilat_ext.modules.position_codes import grid_codes

POS_EMB_INITS = (None, "grid")

# option -> (the value that means what the model does today, why it went)
REMOVED_OPTIONS = {
    "condition_tokens": (True, "the condition tokens are always part of the sequence, as in the paper; "
                               "`condition_tokens: false` (the condition through aligned_condition alone) "
                               "was not adopted"),
    "warped_condition": (False, "superseded by warp_reference (the condition frame warped to the target pose)"),
}


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def reject_options(owner: str, options: Mapping) -> None:
    """Refuse keyword arguments a model does not take: a removed option (unless given the value that
    means today's behaviour, which only warns) names why it went; anything else is unknown."""
    unknown = sorted(k for k in options if k not in REMOVED_OPTIONS)
    if unknown:
        raise ValueError(f"{owner} got unknown option(s) {unknown}")
    for key, value in options.items():
        today, why = REMOVED_OPTIONS[key]
        if value != today:
            raise ValueError(f"{owner}: option {key}={value!r} was removed: {why} (see docs/options.md)")
        warnings.warn(f"{owner}: option {key} was removed ({why}); drop it from the config", stacklevel=3)


@dataclass(frozen=True)
class ConditioningOptions:
    """pos_emb_init (None or "grid"): start the backbone's `pos_emb` with `grid_codes`, the same
        code for condition cell (r, c) and for the position that predicts grid cell (r, c).
    aligned_condition (bool): an embedding of the condition codes added (through the backbone's
        `pos_features`) to the input of the position that predicts grid cell j: condition token j
        itself. Needs a condition on the image-token grid in raster order.
    aligned_kernel (odd int >= 1): with k > 1 the aligned feature of cell j also sees the k x k
        condition cells around it (a residual conv starting at zero). The condition is known in
        full, so nothing leaks."""
    pos_emb_init: Optional[str] = None
    aligned_condition: bool = False
    aligned_kernel: int = 1

    def __post_init__(self):
        if self.pos_emb_init not in POS_EMB_INITS:
            raise ValueError(f"pos_emb_init must be one of {POS_EMB_INITS}, got {self.pos_emb_init!r}")
        check_bool("aligned_condition", self.aligned_condition)
        k = self.aligned_kernel
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1 or k % 2 == 0:
            raise ValueError(f"aligned_kernel must be an odd integer >= 1, got {k!r}")
        if k > 1 and not self.aligned_condition:
            raise ValueError(f"aligned_kernel {k} needs aligned_condition: true")


@dataclass(frozen=True)
class PoseOptions:
    """joint_position_codes (bool): add to each landmark's features the `position_codes` of where it
        is (the code `pos_emb_init: grid` gives the grid cells there).
    pose_map (bool): give the row that predicts cell j the target skeleton around j (`limb_map` on
        the token grid through a 3 x 3 conv starting at zero); the extra condition features are
        then the 13 landmark features followed by the L map features.
    warp_reference (bool): condition on the reference frame with its limbs moved to the target pose
        (`warp_image`), in training, `edit_inputs` and `synthesize` alike. Needs the reference pose.
    warp_reach (float > 0): how far beside a limb pixels move with it, in token cells."""
    joint_position_codes: bool = False
    pose_map: bool = False
    warp_reference: bool = False
    warp_reach: float = 1.0

    def __post_init__(self):
        for name in ("joint_position_codes", "pose_map", "warp_reference"):
            check_bool(name, getattr(self, name))
        r = self.warp_reach
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0:
            raise ValueError(f"warp_reach must be a positive number of token cells, got {r!r}")


# ------------------------------------------------------------------------ the conditioning modules


def build_aligned(model, options: ConditioningOptions) -> Tuple[Optional[nn.Embedding], Optional[nn.Conv2d]]:
    """(aligned_emb, aligned_conv) for `model` (either None when off); sets `model.aligned_grid`."""
    if not options.aligned_condition:
        return None, None
    if model.be_unconditional:
        raise ValueError("aligned_condition needs a condition; this model is unconditional")
    from taming.modules.transformer.permuter import Identity
    if not isinstance(model.permuter, Identity):
        raise ValueError(f"aligned_condition needs raster order (permuter_config Identity), not "
                         f"{type(model.permuter).__name__}")
    grid = stage_grid(model.first_stage_model)
    cond = stage_grid(model.cond_stage_model, model.downsample_cond_size)
    if grid is None or cond is None or grid != cond:
        raise ValueError(f"aligned_condition needs the condition tokens on the image-token grid; the condition "
                         f"stage gives {cond}, the first stage {grid}")
    n_embd = model.transformer.n_embd
    emb = nn.Embedding(int(model.cond_stage_model.quantize.n_e), n_embd)
    nn.init.normal_(emb.weight, std=0.02)
    model.aligned_grid = grid
    conv = None
    if options.aligned_kernel > 1:
        conv = nn.Conv2d(n_embd, n_embd, options.aligned_kernel, padding=options.aligned_kernel // 2)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return emb, conv


def aligned_features(emb: nn.Embedding, conv: Optional[nn.Conv2d], grid: Tuple[int, int], c_idx: torch.Tensor,
                     n_pre: int, n_grid: int) -> torch.Tensor:
    """(B, n_pre + n_grid - 1, C): zero except emb(c_j) (+ conv of the embeddings around cell j) at
    the position that predicts grid cell j (n_pre - 1 + j). c_idx: (B, n_grid) condition tokens."""
    if c_idx.shape[1] != n_grid:
        raise ValueError(f"aligned_condition: {c_idx.shape[1]} condition tokens for {n_grid} grid tokens")
    aligned = emb(c_idx.long())                                                       # (B, L, C)
    if conv is not None:
        h, w = grid
        cells = aligned.transpose(1, 2).reshape(aligned.shape[0], -1, h, w)             # (B, C, h, w)
        aligned = aligned + conv(cells).flatten(2).transpose(1, 2)
    return F.pad(aligned, (0, 0, n_pre - 1, 0))


@torch.no_grad()
def init_grid_positions(model) -> None:
    """`pos_emb_init: grid` on `model.transformer.pos_emb` (1, block, C): condition cell (r, c) and
    the position whose output predicts grid cell (r, c) get the same `grid_codes` (normalised
    coordinates, so a coarser condition grid still lines up). Start tokens and extra condition
    features keep the backbone's initial value."""
    pos_emb = model.transformer.pos_emb
    dim = pos_emb.shape[-1]
    grid = stage_grid(model.first_stage_model)
    if grid is None:
        raise ValueError("pos_emb_init 'grid' needs a first stage with a taming encoder")
    cond = None if model.be_unconditional else stage_grid(model.cond_stage_model, model.downsample_cond_size)
    n_cond = 0 if cond is None else cond[0] * cond[1]
    L = grid[0] * grid[1]
    start = model.layout == "start"
    first_cond = 1 if start else 0                                      # after c_s in the start layout
    n_pre = (1 + n_cond + model.n_extra_positions + 1) if start else n_cond
    if n_pre + L - 1 > pos_emb.shape[1]:
        raise ValueError(f"pos_emb_init 'grid': the sequence needs {n_pre + L - 1} positions, the "
                         f"transformer's block_size is {pos_emb.shape[1]}")
    cells = max(grid)                       # one set of wavelengths for both grids
    if n_cond:
        pos_emb[0, first_cond:first_cond + n_cond] = grid_codes(*cond, dim, cells).to(pos_emb)
    codes = grid_codes(*grid, dim, cells).to(pos_emb)
    # the output at position n_pre - 1 + j predicts cell j; in taming's layout position n_cond - 1
    # is also the last condition cell, which keeps its condition code
    j0 = 0 if start or not n_cond else 1
    pos_emb[0, n_pre - 1 + j0:n_pre - 1 + L] = codes[j0:]
