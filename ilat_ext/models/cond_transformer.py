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
  rate from `base_learning_rate`); parameter groups cover every transformer parameter exactly once.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import ilat_ext.compat  # noqa: F401  (makes taming.models importable on Lightning 2)
from taming.models.cond_transformer import Net2NetTransformer as _UpstreamNet2Net

from ilat_ext.models.base import CheckpointMixin
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
                 betas: Tuple[float, float] = (0.9, 0.95)):
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
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys)

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
        groups = transformer_param_groups(self.transformer, self.weight_decay)
        return torch.optim.AdamW(groups, lr=self.learning_rate, betas=self.betas)
