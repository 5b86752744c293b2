"""Net2Net transformer (Esser et al. 2021) on Lightning 2: the "Taming" baseline.

A subclass of upstream `taming.models.cond_transformer.Net2NetTransformer` with upstream's
parameter names (`transformer.*`, `first_stage_model.*`, `cond_stage_model.*`), so public Taming
checkpoints load. What differs, and why:
- `init_from_ckpt` goes through the safe loader and reports keys (upstream deletes dict keys
  while iterating over them, which crashes as soon as an ignore key matches).
- The condition stage may be `__is_first_stage__` (reuse the first stage) or
  `__is_unconditional__` (one start-of-sequence token), which the PyPI release lacks.
- Frozen stages are frozen for real (`requires_grad=False`, always in eval mode), so DDP needs no
  unused-parameter search and optimisers never see them.
- `learning_rate`, `weight_decay` and `betas` are arguments (main.py still sets the learning
  rate from `base_learning_rate`); parameter groups cover every trainable parameter exactly once;
  optional linear warm-up (`warmup_steps`) and linear decay to 0 (`decay_steps`), stepped per batch
  and restored on resume (the release restarts its schedule).
- Editing, for the side-by-side comparison with iLAT (paper Fig. 4, Table 2):
  `sample_edit` is Taming's edit (every token from the first masked one to the end of the raster
  is regenerated, full quantized decoding); `sample_local` is Taming* (the same weights sampled with
  iLAT's LA mask in taming's layout, masked tokens only, Eq. 4 decoding when the first stage is a
  TS-VQGAN). Both use the KV-cached sampler of `ilat_ext.modules.sampling`. Upstream's `sample()`
  (full AR, no cache) still works and is the reference for whole-image AR time.
- Training from stored tokens (`scripts/quantize_dataset.py`, `ilat_ext.data.tokens`): a batch
  with "z_full" and "c_indices" trains without running the frozen stages (`forward_tokens`, with
  upstream's pkeep corruption and permuter); the file's stages are checked against this model's
  (`check_token_meta`) when training or validation starts, and `log_images` decodes the tokens.
"""
import hashlib
import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

import ilat_ext.compat  # noqa: F401  (makes taming.models importable on Lightning 2)
from taming.models.cond_transformer import Net2NetTransformer as _UpstreamNet2Net

from ilat_ext.masks import check_pixel_mask, la_attention_mask, la_causal_positions, latent_mask
from ilat_ext.models.base import CheckpointMixin
from ilat_ext.modules.sampling import SampleResult, sample_tokens
from ilat_ext.util import instantiate_from_config


def disabled_train(self, mode: bool = True):
    """Replaces `.train` on frozen stages so Lightning's model.train() cannot switch them back."""
    return self


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.train = disabled_train.__get__(module)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class SOSProvider(nn.Module):
    """Unconditional "condition stage": a single start-of-sequence token per sample."""

    def __init__(self, sos_token: int):
        super().__init__()
        self.sos_token = int(sos_token)

    def encode(self, x: torch.Tensor):
        """x: (B, ...) -> (None, None, (None, None, indices (B, 1)))."""
        c = torch.full((x.shape[0], 1), self.sos_token, dtype=torch.long, device=x.device)
        return None, None, (None, None, c)


def stage_fingerprint(module: nn.Module) -> str:
    """sha256 (hex) of a frozen stage: its class, every state-dict entry's name, dtype, shape and bytes
    in name order, and the SOSProvider's token. Equal for the same weights on any device."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    if isinstance(module, SOSProvider):
        h.update(f"sos_token={module.sos_token}".encode())
    for name, value in sorted(module.state_dict().items()):
        value = value.detach().to("cpu").contiguous()
        h.update(f"|{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()


def _datasets_in(obj: Any, depth: int = 0) -> Iterator[Any]:
    """Datasets reachable from a dataloader (or a list/dict of them), through wrappers that keep the
    inner dataset in `.dataset` (MaskedDataset, Subset, DataLoader) or `.data` (WrappedDataset)."""
    if obj is None or depth > 8:
        return
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _datasets_in(o, depth + 1)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            yield from _datasets_in(o, depth + 1)
    elif isinstance(obj, torch.utils.data.DataLoader):
        yield from _datasets_in(obj.dataset, depth + 1)
    else:
        yield obj
        for attr in ("dataset", "data"):
            inner = getattr(obj, attr, None)
            if isinstance(inner, torch.utils.data.Dataset):
                yield from _datasets_in(inner, depth + 1)


def transformer_param_groups(module: nn.Module, weight_decay: float):
    """AdamW groups: weight decay on Linear (and Conv) weights only; biases, norms, embeddings and
    free parameters (e.g. minGPT's `pos_emb`) without. Every parameter lands in exactly one group."""
    decay_types = (nn.Linear, nn.Conv1d, nn.Conv2d)
    decay, no_decay = [], []
    seen = set()
    for module_name, sub in module.named_modules():
        for name, param in sub.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (decay if name == "weight" and isinstance(sub, decay_types) else no_decay).append(param)
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert seen == trainable, "every trainable parameter must be in exactly one group"
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_linear_decay(step: int, warmup_steps: int = 0, decay_steps: Optional[int] = None) -> float:
    """Learning-rate factor: linear warm-up over `warmup_steps`, then linear decay reaching 0 at
    `decay_steps` (None: constant after warm-up). The release's schedule: 10k warm-up, 0 at 300k."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay_steps is None:
        return 1.0
    return max(0.0, (decay_steps - step) / max(1, decay_steps - warmup_steps))


FOLLOW_MAX_STEPS = "max_steps"


def check_schedule(warmup_steps, decay_steps) -> Tuple[int, Union[int, str, None]]:
    """Validated (warmup_steps, decay_steps) of `warmup_linear_decay`. decay_steps may also be
    "max_steps": decay to 0 at the trainer's max_steps (so `--max_steps N` fits the schedule to N)."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, Integral) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if decay_steps is None or decay_steps == FOLLOW_MAX_STEPS:
        return int(warmup_steps), decay_steps
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, Integral) or decay_steps <= warmup_steps:
        raise ValueError(f"decay_steps must be None, {FOLLOW_MAX_STEPS!r} or an integer above warmup_steps "
                         f"({warmup_steps}), got {decay_steps!r}")
    return int(warmup_steps), int(decay_steps)


def position_codes(y: torch.Tensor, x: torch.Tensor, dim: int, cells: int, std: float = 0.02) -> torch.Tensor:
    """2D sinusoidal codes (..., dim) of points at NORMALISED image coordinates y, x (..., in [0, 1]):
    half the channels encode y, half x, each as sin/cos pairs with wavelengths from 2 cells of a
    `cells`-wide grid to 2 image heights (geometric), scaled to standard deviation `std` (minGPT's
    embedding scale). The same function places grid cells (`grid_codes`) and pose landmarks."""
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


def stage_grid(stage: nn.Module, size: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """(h, w) token grid of a taming-style stage (an `encoder` with `resolution` and
    `num_resolutions`) for square inputs of `size` (default: the encoder's resolution); None for a
    stage without one (the unconditional SOS provider)."""
    encoder = getattr(stage, "encoder", None)
    if encoder is None or not hasattr(encoder, "num_resolutions"):
        return None
    side = int(size if size is not None and size > 0 else encoder.resolution) // 2 ** (encoder.num_resolutions - 1)
    return side, side


POS_EMB_INITS = (None, "grid")


@dataclass
class EditResult:
    """What `sample_local` / `sample_edit` return.

    image: (B, C, H, W) in [-1, 1]; indices: (B, L) grid tokens after sampling; token_mask: (B, L)
    bool, the tokens that were generated; steps: transformer calls; logits: (B, L, V) or None, the
    logits each generated token was drawn from (`return_logits=True`)."""
    image: torch.Tensor
    indices: torch.Tensor
    token_mask: torch.Tensor
    steps: int
    logits: Optional[torch.Tensor] = None


class TamingTransformer(CheckpointMixin, _UpstreamNet2Net):
    """Upstream's constructor plus `sos_token`, `learning_rate`, `weight_decay`, `betas`, `unsafe_load`.

    `forward(x (B, C, H, W), c)` -> `(logits (B, h*w, vocab), target (B, h*w))`; `sample(...)` is
    upstream's full autoregressive sampler (the reference for whole-image AR time).
    """

    ddp_find_unused_parameters = False

    def __init__(self, transformer_config, first_stage_config, cond_stage_config, permuter_config=None,
                 ckpt_path: Optional[str] = None, ignore_keys: Sequence[str] = (), first_stage_key: str = "image",
                 cond_stage_key: str = "depth", downsample_cond_size: int = -1, pkeep: float = 1.0,
                 sos_token: int = 0, learning_rate: Optional[float] = None, weight_decay: float = 0.01,
                 betas: Tuple[float, float] = (0.9, 0.95), mask_key: str = "mask", warmup_steps: int = 0,
                 decay_steps: Union[int, str, None] = None, pos_emb_init: Optional[str] = None,
                 aligned_condition: bool = False, aligned_kernel: int = 1, condition_tokens: bool = True):
        warmup_steps, decay_steps = check_schedule(warmup_steps, decay_steps)
        if not isinstance(condition_tokens, bool):
            raise ValueError(f"condition_tokens must be true or false, got {condition_tokens!r}")
        if not condition_tokens and not aligned_condition:
            raise ValueError("condition_tokens: false leaves the condition only to aligned_condition; set "
                             "aligned_condition: true (without it the model would never see the condition)")
        if not condition_tokens and cond_stage_config == "__is_unconditional__":
            raise ValueError("condition_tokens: false is for conditional models; this one is unconditional")
        self.condition_tokens = condition_tokens
        if isinstance(aligned_kernel, bool) or not isinstance(aligned_kernel, Integral) or aligned_kernel < 1 \
                or aligned_kernel % 2 == 0:
            raise ValueError(f"aligned_kernel must be an odd integer >= 1, got {aligned_kernel!r}")
        if aligned_kernel > 1 and not aligned_condition:
            raise ValueError(f"aligned_kernel {aligned_kernel} needs aligned_condition: true")
        if pos_emb_init not in POS_EMB_INITS:
            raise ValueError(f"pos_emb_init must be one of {POS_EMB_INITS}, got {pos_emb_init!r}")
        self.be_unconditional = cond_stage_config == "__is_unconditional__"
        self.sos_token = sos_token
        super().__init__(transformer_config, first_stage_config, cond_stage_config, permuter_config=permuter_config,
                         ckpt_path=None, ignore_keys=[], first_stage_key=first_stage_key,
                         cond_stage_key=cond_stage_key, downsample_cond_size=downsample_cond_size, pkeep=pkeep)
        if self.be_unconditional:
            self.cond_stage_key = first_stage_key
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.betas = tuple(betas)
        self.mask_key = mask_key
        self.warmup_steps, self.decay_steps = warmup_steps, decay_steps
        self.token_latent_shape: Optional[Tuple[int, int]] = None  # (h, w) from a checked token file
        self._checked_token_datasets = set()
        self.pos_emb_init = pos_emb_init
        if pos_emb_init == "grid":
            self.init_grid_positions()
        self.aligned_emb = self._aligned_embedding() if aligned_condition else None
        self.aligned_conv = self._aligned_context(int(aligned_kernel)) if aligned_kernel > 1 else None
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys)

    def _aligned_embedding(self) -> nn.Embedding:
        """`aligned_condition: true`: an embedding of the condition codes, added (through the
        backbone's `pos_features`) to the input of the position that predicts grid cell j: the
        condition token of cell j itself. The condition tokens still enter the sequence as the
        paper has them; this gives the transformer the spatially aligned one directly instead of
        making it find cell j among N condition tokens by attention, which in our CPU runs had not
        happened after 1000 steps (sketch NLL gap 0.01; with it 0.2 after 350 steps). Needs a
        condition on the same grid as the image tokens (sketches, the pose task's reference
        frame) in raster order. An addition of ours; off by default."""
        if self.be_unconditional:
            raise ValueError("aligned_condition needs a condition; this model is unconditional")
        from taming.modules.transformer.permuter import Identity
        if not isinstance(self.permuter, Identity):
            raise ValueError(f"aligned_condition needs raster order (permuter_config Identity), not "
                             f"{type(self.permuter).__name__}")
        grid = stage_grid(self.first_stage_model)
        cond = stage_grid(self.cond_stage_model, self.downsample_cond_size)
        if grid is None or cond is None or grid != cond:
            raise ValueError(f"aligned_condition needs the condition tokens on the image-token grid; the condition "
                             f"stage gives {cond}, the first stage {grid}")
        emb = nn.Embedding(int(self.cond_stage_model.quantize.n_e), self.transformer.n_embd)
        nn.init.normal_(emb.weight, std=0.02)
        self.aligned_grid = grid
        return emb

    def _aligned_context(self, kernel: int) -> nn.Conv2d:
        """`aligned_kernel: k` (k > 1): the aligned feature of cell j also sees the condition cells
        around it: `aligned_emb(c) + conv_kxk(aligned_emb(c))` on the (h, w) grid, the residual conv
        starting at zero (so training starts from k = 1). The row predicting cell j then knows the
        strokes right of and below j, which the autoregressive order has not reached yet; the
        condition is known in full, so nothing leaks. An addition of ours, off by default."""
        n_embd = self.transformer.n_embd
        conv = nn.Conv2d(n_embd, n_embd, kernel, padding=kernel // 2)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def position_features(self, c_idx: torch.Tensor, n_pre: int, n_grid: int,
                          extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The backbone's `pos_features` for a sequence of n_pre leading positions and n_grid grid
        tokens: (B, n_pre + n_grid - 1, C), zero except `aligned_emb(c_j)` (plus, with
        `aligned_kernel` > 1, the convolution of the embeddings around cell j) at the position that
        predicts grid cell j (n_pre - 1 + j); None without `aligned_condition`. `extra`: the extra
        condition features of the sequence (the pose model's pose map lives there); unused here."""
        if self.aligned_emb is None:
            return None
        if c_idx.shape[1] != n_grid:
            raise ValueError(f"aligned_condition: {c_idx.shape[1]} condition tokens for {n_grid} grid tokens")
        aligned = self.aligned_emb(c_idx.long())                                      # (B, L, C)
        if self.aligned_conv is not None:
            h, w = self.aligned_grid
            grid = aligned.transpose(1, 2).reshape(aligned.shape[0], -1, h, w)          # (B, C, h, w)
            aligned = aligned + self.aligned_conv(grid).flatten(2).transpose(1, 2)
        return F.pad(aligned, (0, 0, n_pre - 1, 0))

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        """Upstream's forward; with `aligned_condition` the same through `forward_tokens` (which adds
        the aligned condition)."""
        if self.aligned_emb is None:
            return super().forward(x, c)
        quant_z, _, info = self.first_stage_model.encode(x)
        _, c_idx = self.encode_to_c(c)
        return self.forward_tokens(info[2].view(quant_z.shape[0], -1), c_idx)

    def sample(self, *args, **kwargs):
        """Upstream's full autoregressive sampler (no cache); it knows nothing of `aligned_condition`."""
        if self.aligned_emb is not None:
            raise NotImplementedError("upstream's sample() does not add the aligned condition; use sample_edit "
                                      "(Taming's edit) or sample_local")
        return super().sample(*args, **kwargs)

    n_extra_positions = 0  # condition features between the condition tokens and the grid (pose: 13)

    @torch.no_grad()
    def init_grid_positions(self) -> None:
        """`pos_emb_init: grid`: start the backbone's (trainable) `pos_emb` with `grid_codes`, the
        same code for condition cell (r, c) and for the position whose output predicts grid cell
        (r, c) (in normalised coordinates, so a coarser condition grid still lines up): positions
        carry their 2D place from the first step, where minGPT's start at zero. On its own it did
        not make the toy iLAT use its sketch within 350 steps (mouth-token loss 2.941 with the
        face's own sketch, 2.937 with another's); `aligned_condition` did. Start tokens and extra
        condition features keep the backbone's initial value. The paper's (and upstream's) learned
        embedding is the default (`pos_emb_init: null`)."""
        pos_emb = self.transformer.pos_emb                                             # (1, block, C)
        dim = pos_emb.shape[-1]
        grid = stage_grid(self.first_stage_model)
        if grid is None:
            raise ValueError("pos_emb_init 'grid' needs a first stage with a taming encoder")
        cond = None if self.be_unconditional else stage_grid(self.cond_stage_model, self.downsample_cond_size)
        n_cond = 0 if cond is None or not self.condition_tokens else cond[0] * cond[1]
        L = grid[0] * grid[1]
        start = self.layout == "start"
        first_cond = 1 if start else 0                                  # after c_s in the start layout
        # taming's layout without condition tokens starts with one sos token, which predicts cell 0
        n_pre = (1 + n_cond + self.n_extra_positions + 1) if start else (n_cond if self.condition_tokens else 1)
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

    def init_first_stage_from_ckpt(self, config):
        self.first_stage_model = freeze(instantiate_from_config(config))

    def init_cond_stage_from_ckpt(self, config):
        if config == "__is_first_stage__":
            print("Using the first stage also as the condition stage.")
            self.cond_stage_model = self.first_stage_model
        elif config == "__is_unconditional__":
            print(f"Training unconditionally; start-of-sequence token {self.sos_token}.")
            self.cond_stage_model = SOSProvider(self.sos_token)
        else:
            self.cond_stage_model = freeze(instantiate_from_config(config))

    @torch.no_grad()
    def encode_to_c(self, c: torch.Tensor):
        """c: (B, C, H, W) -> (quant_c or None, indices (B, n)); works for SOSProvider too."""
        if self.downsample_cond_size > -1:
            c = F.interpolate(c, size=(self.downsample_cond_size, self.downsample_cond_size))
        quant_c, _, info = self.cond_stage_model.encode(c)
        return quant_c, info[2].view(c.shape[0], -1)

    def configure_optimizers(self):
        if self.learning_rate is None:
            raise ValueError(f"{type(self).__name__}.learning_rate is not set: pass learning_rate= or let "
                             "main.py set it from model.base_learning_rate")
        groups = transformer_param_groups(self, self.weight_decay)  # frozen stages have no trainable params
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate, betas=self.betas)
        if self.warmup_steps <= 0 and self.decay_steps is None:
            return optimizer
        decay_steps = self.decay_steps
        if decay_steps == FOLLOW_MAX_STEPS:
            decay_steps = self._trainer_max_steps()
        factor = lambda step: warmup_linear_decay(step, self.warmup_steps, decay_steps)  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _trainer_max_steps(self) -> int:
        """The trainer's max_steps, for `decay_steps: max_steps` (a run no longer than the warm-up
        never leaves it); a clear error where there is none."""
        trainer = getattr(self, "_trainer", None)
        max_steps = None if trainer is None else trainer.max_steps
        if max_steps is None or max_steps <= 0:
            got = "no trainer is attached" if max_steps is None else f"the trainer's max_steps is {max_steps}"
            raise ValueError(f"decay_steps: {FOLLOW_MAX_STEPS} decays the learning rate to 0 at the trainer's "
                             f"max_steps, but {got}; pass --max_steps or set decay_steps to a number")
        return max(int(max_steps), self.warmup_steps + 1)

    # ------------------------------------------------------------------ editing
    layout = "taming"  # condition tokens first, no start tokens (upstream's sequence)

    @property
    def first_stage_factor(self) -> int:
        """Pixels per latent cell of the first stage (2 ** number of downsamplings)."""
        return 2 ** (self.first_stage_model.encoder.num_resolutions - 1)

    def _check_raster_order(self) -> None:
        from taming.modules.transformer.permuter import Identity
        if not isinstance(self.permuter, Identity):
            raise ValueError(f"local sampling works in raster order; this model uses the permuter "
                             f"{type(self.permuter).__name__} (permuter_config must be Identity)")

    def token_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pixel mask (B, 1, H, W) matching x -> M_q (B, h*w) bool (a latent cell touched by the mask)."""
        mask = check_pixel_mask(mask, x)
        return latent_mask(mask, self.first_stage_factor).reshape(x.shape[0], -1)

    @torch.no_grad()
    def encode_target(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """x (B, C, H, W), mask (B, 1, H, W) -> (indices (B, L), kept latent (B, D, h, w)).

        A TS-VQGAN first stage encodes with the mask (nothing outside M_q sees the masked pixels); a
        plain VQGAN (upstream's, or iLAT* of paper Table 1: the same weights without two-stream
        convolutions) encodes the whole image, masked pixels included. Either way the continuous
        features are kept (Eq. 4: the unedited region is decoded without quantisation error)."""
        from ilat_ext.models.tsvqgan import TSVQModel
        fs = self.first_stage_model
        if isinstance(fs, TSVQModel):
            kept = fs.encode_features(x, mask)
        elif hasattr(fs, "encoder") and hasattr(fs, "quant_conv"):
            kept = fs.quant_conv(fs.encoder(x))
        else:  # a first stage without taming's encoder layout: its codes are all there is
            kept, _, _ = fs.encode(x)
        _, _, info = fs.quantize(kept)
        return info[2].view(x.shape[0], -1), kept

    @torch.no_grad()
    def decode_tokens(self, indices: torch.Tensor, kept: torch.Tensor, token_mask: Optional[torch.Tensor]):
        """Eq. 4 decoding: codebook vectors of `indices` where token_mask (B, L) is True, `kept`
        (B, D, h, w) elsewhere; token_mask None decodes every position from the codebook."""
        B, D, h, w = kept.shape
        quant = self.first_stage_model.quantize.embedding(indices.reshape(B, h, w)).permute(0, 3, 1, 2)
        if token_mask is not None:
            quant = torch.where(token_mask.view(B, 1, h, w), quant, kept)
        return self.first_stage_model.decode(quant)

    def check_condition(self, c: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The condition image (B, C_c, H_c, W_c) for `x`, validated; unconditional models take x."""
        if self.be_unconditional:
            return x
        if c is None:
            raise ValueError(f"{type(self).__name__} is conditional (cond_stage_key {self.cond_stage_key!r}): "
                             "pass the condition image c")
        if c.dim() != 4 or c.shape[0] != x.shape[0]:
            raise ValueError(f"condition of shape {tuple(c.shape)} must be (B, C, H, W) with B = {x.shape[0]}")
        conv_in = getattr(getattr(self.cond_stage_model, "encoder", None), "conv_in", None)
        if conv_in is not None and c.shape[1] != conv_in.in_channels:
            raise ValueError(f"condition has {c.shape[1]} channels, the condition stage expects {conv_in.in_channels}")
        return c

    def sequence_inputs(self, c_indices: torch.Tensor, extra: Optional[torch.Tensor] = None):
        """-> (embeddings (B, E, C) or None, prefix tokens (B, P) or None, n_cond) of the sequence
        before the grid tokens. Taming's layout: the condition tokens as a prefix; with
        `condition_tokens: false` one `sos_token` instead (the condition enters through
        `position_features` alone)."""
        if extra is not None:
            raise ValueError(f"{type(self).__name__} takes no extra condition features")
        if not self.condition_tokens:
            return None, self.start_tokens(c_indices), 1
        return None, c_indices, c_indices.shape[1]

    def start_tokens(self, c_indices: torch.Tensor) -> torch.Tensor:
        """(B, 1) of `sos_token`: the prefix of taming's layout without condition tokens (upstream's
        start token of unconditional models, here with the aligned condition at its position)."""
        return torch.full((c_indices.shape[0], 1), int(self.sos_token), dtype=torch.long, device=c_indices.device)

    @torch.no_grad()
    def _edit(self, x, mask, c, extra, mode: str, greedy: bool, temperature: float, top_k: Optional[int],
              seed: Optional[int], generator: Optional[torch.Generator], use_cache: bool, progress: bool,
              return_logits: bool) -> EditResult:
        self._check_raster_order()
        x = x.to(self.device)
        mask = check_pixel_mask(mask.to(self.device), x)
        c = self.check_condition(None if c is None else c.to(self.device), x)
        m_q = self.token_mask(x, mask)                                          # (B, L)
        z, kept = self.encode_target(x, mask)
        if z.shape[1] != m_q.shape[1]:
            raise ValueError(f"latent mask of {m_q.shape[1]} tokens does not match the first stage's {z.shape[1]}")
        if not m_q.any():  # nothing to edit: the input comes back, no transformer call
            return EditResult(x.clone(), z, m_q, 0, None)
        _, c_idx = self.encode_to_c(c)
        result = self._edit_tokens(z, kept, m_q, c_idx, extra, mode, greedy=greedy, temperature=temperature,
                                   top_k=top_k, seed=seed, generator=generator, use_cache=use_cache,
                                   progress=progress, return_logits=return_logits)
        # elements with nothing to edit come back unchanged, as a batch with nothing to edit does
        untouched = ~m_q.any(1)
        if untouched.any():
            result.image = torch.where(untouched[:, None, None, None], x, result.image)
        return result

    @torch.no_grad()
    def _edit_tokens(self, z: torch.Tensor, kept: torch.Tensor, m_q: torch.Tensor, c_idx: torch.Tensor,
                     extra: Optional[torch.Tensor] = None, mode: str = "local", *, greedy: bool = True,
                     temperature: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = None,
                     generator: Optional[torch.Generator] = None, use_cache: bool = True, progress: bool = False,
                     return_logits: bool = False) -> EditResult:
        """The edit on tokens: z (B, L) grid tokens, kept (B, D, h, w) latent decoded outside m_q (Eq. 4),
        m_q (B, L) bool, c_idx (B, N) condition tokens; mode "local" (LA mask) or "taming"."""
        B, device = z.shape[0], z.device
        emb, prefix, n_cond = self.sequence_inputs(c_idx, extra)
        n_pre = (0 if emb is None else emb.shape[1]) + (0 if prefix is None else prefix.shape[1])
        if mode == "local":
            gen, allowed = m_q, la_attention_mask(m_q, n_cond, self.layout)
            sequential = la_causal_positions(m_q, n_cond, self.layout)
        else:  # Taming: plain causal attention, regenerate from the first masked token to the end
            L = m_q.shape[1]
            first = torch.where(m_q.any(1), m_q.float().argmax(1), L)            # (B,)
            gen = torch.arange(L, device=device)[None] >= first[:, None]
            S = n_pre + L - 1
            allowed = torch.ones(S, S, dtype=torch.bool, device=device).tril().expand(B, S, S)
            sequential = torch.arange(S, device=device)[None] >= (n_pre - 1 + first)[:, None]
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        n_codes = self.first_stage_model.quantize.n_e
        result: SampleResult = sample_tokens(
            self.transformer, z, gen, allowed, sequential, emb, prefix, greedy=greedy, temperature=temperature,
            top_k=top_k, generator=generator, vocab_limit=n_codes, use_cache=use_cache, progress=progress,
            record_logits=return_logits, pos_features=self.position_features(c_idx, n_pre, m_q.shape[1], extra))
        image = self.decode_tokens(result.indices, kept, m_q if mode == "local" else None)
        return EditResult(image, result.indices, gen, result.steps, result.logits)

    def sample_local(self, x: torch.Tensor, mask: torch.Tensor, c: Optional[torch.Tensor] = None,
                     extra: Optional[torch.Tensor] = None, *, greedy: bool = True, temperature: float = 1.0,
                     top_k: Optional[int] = None, seed: Optional[int] = None,
                     generator: Optional[torch.Generator] = None, use_cache: bool = True, progress: bool = False,
                     return_logits: bool = False) -> EditResult:
        """Local editing (iLAT; Taming* on a Taming model): regenerate the masked tokens only.

        x: (B, C, H, W) in [-1, 1]; mask: (B, 1, H, W), 1 = region to edit (may differ per element);
        c: (B, C_c, H_c, W_c) condition image (e.g. the sketch), None for unconditional models;
        extra: (B, E, n_embd) extra condition features (pose) where the model takes them.
        greedy (the paper's default) or a draw at `temperature` from the `top_k` most likely codes,
        seeded by `seed` / `generator`. Returns an `EditResult`; its image keeps everything outside
        the mask's latent cells (Eq. 4). An empty mask returns the input without a transformer call.
        """
        return self._edit(x, mask, c, extra, "local", greedy, temperature, top_k, seed, generator, use_cache,
                          progress, return_logits)

    @property
    def trained_causal(self) -> bool:
        """Whether the transformer was trained with plain causal attention, so that Taming's edit
        (`sample_edit`) is the model's own sampling. Always true for the Taming baseline."""
        return True

    def sample_edit(self, x: torch.Tensor, mask: torch.Tensor, c: Optional[torch.Tensor] = None,
                    extra: Optional[torch.Tensor] = None, *, greedy: bool = True, temperature: float = 1.0,
                    top_k: Optional[int] = None, seed: Optional[int] = None,
                    generator: Optional[torch.Generator] = None, use_cache: bool = True, progress: bool = False,
                    return_logits: bool = False) -> EditResult:
        """Taming's edit: keep the tokens before the first masked one, regenerate all the rest with
        plain causal attention, decode every position from the codebook. Arguments as `sample_local`."""
        return self._edit(x, mask, c, extra, "taming", greedy, temperature, top_k, seed, generator, use_cache,
                          progress, return_logits)

    def get_mask(self, batch, x: torch.Tensor) -> torch.Tensor:
        if self.mask_key not in batch:
            raise KeyError(f"the batch has no '{self.mask_key}' entry (keys: {sorted(batch)}); wrap the dataset "
                           "in ilat_ext.data.masked.MaskedDataset or set mask_key")
        return check_pixel_mask(self.get_input(self.mask_key, batch), x)

    @torch.no_grad()
    def log_images(self, batch, N: int = 4, **kwargs):
        """inputs | mask | condition | reconstructions | taming (edit) | taming_star (LA mask), in [-1, 1].

        Greedy edits; without a mask in the batch, the lower half of the image is edited. A batch of
        stored tokens (no images) is decoded instead, see `_log_token_images`."""
        if self.first_stage_key not in batch and ("z_full" in batch or "z_indices" in batch):
            return self._log_token_images(batch, N)
        x = self.get_input(self.first_stage_key, batch)[:N].to(self.device)
        c = None if self.be_unconditional else self.get_input(self.cond_stage_key, batch)[:N].to(self.device)
        if self.mask_key in batch:
            mask = self.get_mask({self.mask_key: batch[self.mask_key][:N]}, x)
        else:
            mask = torch.zeros_like(x[:, :1])
            mask[:, :, x.shape[2] // 2:] = 1
        z, kept = self.encode_target(x, mask)
        log = {"inputs": x, "mask": mask * 2 - 1}
        if c is not None and c.shape[1] in (1, 3):
            log["condition"] = c
        log["reconstructions"] = self.decode_tokens(z, kept, None)
        log.update(self._log_edits(x, mask, c))
        return log

    def _log_edits(self, x, mask, c):
        return {"taming": self.sample_edit(x, mask, c).image, "taming_star": self.sample_local(x, mask, c).image}

    # ------------------------------------------------------------------ training from stored tokens
    token_batch_key = "z_full"  # the batch entry that makes shared_step train from tokens

    def batch_tokens(self, batch, key: str) -> torch.Tensor:
        """batch[key] as a (B, n) tensor on this model's device (a token batch from `TokenDataset`)."""
        if key not in batch:
            raise KeyError(f"the token batch has no '{key}' entry (keys: {sorted(batch)}); "
                           "use ilat_ext.data.tokens.TokenDataset")
        value = torch.as_tensor(batch[key], device=self.device)
        if value.dim() != 2:
            raise ValueError(f"batch['{key}'] must be (B, n), got shape {tuple(value.shape)}")
        return value

    def forward_tokens(self, z: torch.Tensor, c_idx: torch.Tensor):
        """Upstream's `forward` from stored tokens: z (B, L) grid tokens in raster order (the permuter
        is applied here, as upstream's `encode_to_z` does), c_idx (B, N) condition tokens
        -> (logits (B, L, vocab), target (B, L) permuted). pkeep < 1 corrupts inputs in training."""
        z = self.permuter(z.long())
        c_idx = c_idx.long()
        if self.training and self.pkeep < 1.0:
            keep = torch.bernoulli(self.pkeep * torch.ones(z.shape, device=z.device)).round().to(torch.int64)
            noise = torch.randint_like(z, self.transformer.config.vocab_size)
            inputs = keep * z + (1 - keep) * noise
        else:
            inputs = z
        _, prefix, _ = self.sequence_inputs(c_idx)
        features = self.position_features(c_idx, prefix.shape[1], z.shape[1])
        logits, _ = self.transformer(torch.cat((prefix, inputs), dim=1)[:, :-1], pos_features=features)
        return logits[:, prefix.shape[1] - 1:], z  # output i predicts z_i given z_<i and c

    def shared_step(self, batch, batch_idx):
        if self.token_batch_key not in batch:
            return super().shared_step(batch, batch_idx)
        logits, target = self.forward_tokens(self.batch_tokens(batch, "z_full"), self.batch_tokens(batch, "c_indices"))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))

    def token_meta(self) -> Dict[str, Any]:
        """What a token file must share with this model: per stage its codebook size, downsampling
        and `stage_fingerprint` (stored under meta["stages"] by scripts/quantize_dataset.py)."""
        def codes(stage):
            quantize = getattr(stage, "quantize", None)
            return None if quantize is None else int(quantize.n_e)
        return {"first_stage": {"n_embed": codes(self.first_stage_model), "downsample": self.first_stage_factor,
                                "fingerprint": stage_fingerprint(self.first_stage_model)},
                "cond_stage": {"n_embed": codes(self.cond_stage_model),
                               "downsample_cond_size": int(self.downsample_cond_size),
                               "fingerprint": stage_fingerprint(self.cond_stage_model)}}

    def sequence_positions(self, n_cond_tokens: int, n_grid: int) -> int:
        """Transformer positions a training sequence of N condition and L grid tokens takes."""
        c_idx = torch.zeros(1, int(n_cond_tokens), dtype=torch.long, device=self.device)
        with torch.no_grad():
            emb, prefix, _ = self.sequence_inputs(c_idx)
        n_pre = (0 if emb is None else emb.shape[1]) + (0 if prefix is None else prefix.shape[1])
        return n_pre + int(n_grid) - 1

    def check_token_meta(self, meta: Mapping[str, Any], source: str = "token file") -> None:
        """Raise ValueError naming every difference between a token file's meta and this model:
        codebook sizes, downsampling, stage weights (fingerprints), and whether its sequences fit
        the transformer's block_size. Remembers the file's latent grid for `log_images`."""
        stored = meta.get("stages") or {}
        problems = []
        for stage, mine in self.token_meta().items():
            for key, value in mine.items():
                theirs = (stored.get(stage) or {}).get(key)
                if theirs != value:
                    if key == "fingerprint":
                        made = ((meta.get(f"{stage}_config") or {}).get("params") or {}).get("ckpt_path")
                        report = getattr(getattr(self, f"{stage}_model"), "ckpt_load_report", None)
                        loaded = getattr(report, "source", None)
                        problems.append(f"{stage} weights differ (fingerprint {str(theirs)[:12]} in the file, made "
                                        f"from {made!r}; {value[:12]} in the model, loaded from {loaded!r})")
                    else:
                        problems.append(f"{stage} {key}: {theirs!r} in the file, {value!r} in the model")
        L, N = int(meta["latent_length"]), int(meta["cond_length"])
        block = int(self.transformer.get_block_size())
        need = self.sequence_positions(N, L)
        if need > block:
            problems.append(f"its sequences ({N} condition + {L} grid tokens) need {need} positions, the "
                            f"transformer's block_size is {block}")
        if problems:
            raise ValueError(f"{source} does not match this model's stages:\n  - " + "\n  - ".join(problems) +
                             "\nre-run scripts/quantize_dataset.py with this model's config and stage checkpoints")
        shape = meta.get("latent_shape")
        if shape is not None:
            self.token_latent_shape = (int(shape[0]), int(shape[1]))

    def _check_token_datasets(self, loaders) -> None:
        for dataset in _datasets_in(loaders):
            meta = getattr(dataset, "token_meta", None)
            if isinstance(meta, Mapping) and id(dataset) not in self._checked_token_datasets:
                self.check_token_meta(meta, source=f"token file {getattr(dataset, 'path', '?')!r}")
                self._checked_token_datasets.add(id(dataset))

    def on_train_start(self) -> None:
        self._check_token_datasets(self.trainer.train_dataloader)

    def on_validation_start(self) -> None:
        self._check_token_datasets(self.trainer.val_dataloaders)

    def _token_grid(self, n_tokens: int) -> Optional[Tuple[int, int]]:
        if self.token_latent_shape is not None and math.prod(self.token_latent_shape) == n_tokens:
            return self.token_latent_shape
        side = math.isqrt(n_tokens)
        return (side, side) if side * side == n_tokens else None

    def _codebook_latent(self, indices: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """indices (B, h*w) -> their codebook vectors (B, D, h, w)."""
        quant = self.first_stage_model.quantize.embedding(indices.reshape(indices.shape[0], *grid))
        return quant.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def _log_token_images(self, batch, N: int):
        """inputs (z_full decoded) | mask (M_q in pixels) | reconstructions (z_indices decoded) | edits
        from the tokens; no condition image (the sketch is stored as tokens only). Empty if the latent
        grid is unknown (not square and no checked token file)."""
        key = "z_full" if "z_full" in batch else "z_indices"
        z_full = self.batch_tokens(batch, key)[:N].long()
        grid = self._token_grid(z_full.shape[1])
        if grid is None:
            return {}
        log = {"inputs": self.decode_tokens(z_full, self._codebook_latent(z_full, grid), None)}
        if not all(k in batch for k in ("z_indices", "token_mask", "c_indices")):
            return log
        z = self.batch_tokens(batch, "z_indices")[:N].long()
        m_q = self.batch_tokens(batch, "token_mask")[:N].bool()
        c_idx = self.batch_tokens(batch, "c_indices")[:N].long()
        f = self.first_stage_factor
        pixels = m_q.view(-1, 1, *grid).float().repeat_interleave(f, 2).repeat_interleave(f, 3)
        kept = self._codebook_latent(z, grid)
        log["mask"] = pixels * 2 - 1
        log["reconstructions"] = self.decode_tokens(z, kept, None)
        if m_q.any():
            log.update(self._log_token_edits(z, kept, m_q, c_idx))
        return log

    def _log_token_edits(self, z, kept, m_q, c_idx):
        return {"taming": self._edit_tokens(z, kept, m_q, c_idx, mode="taming").image,
                "taming_star": self._edit_tokens(z, kept, m_q, c_idx, mode="local").image}
