"""The frozen stages of a Net2Net transformer: freezing them for real, the unconditional "stage",
their token grid, and a fingerprint of their weights (token files name the stages they came from).
"""
import hashlib
from typing import Optional, Tuple

import torch
from torch import nn


def disabled_train(self, mode: bool = True):
    """Replaces `.train` on frozen stages so Lightning's model.train() cannot switch them back."""
    return self


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode for good, no gradients: DDP needs no unused-parameter search, optimisers never
    see the stage."""
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


class DummyCondStage(nn.Module):
    """Upstream's `taming.models.dummy_cond_stage.DummyCondStage` (absent from the PyPI package): a
    condition that is already tokens (the scene-image configs' `objects_bbox`), passed through.

    `encode(c (B, L) long)` -> `(c, None, (None, None, c))`; `decode(c)` -> `c`. An `nn.Module` without
    parameters (upstream's is a plain object), so that freezing it as a stage works.
    """

    def __init__(self, conditional_key: str = "objects_bbox"):
        super().__init__()
        self.conditional_key = conditional_key

    def encode(self, c: torch.Tensor):
        return c, None, (None, None, c)

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        return c

    def to_rgb(self, c: torch.Tensor) -> torch.Tensor:
        return c


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


def stage_grid(stage: nn.Module, size: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """(h, w) token grid of a taming-style stage (an `encoder` with `resolution` and
    `num_resolutions`) for square inputs of `size` (default: the encoder's resolution); None for a
    stage without one (the unconditional SOS provider)."""
    encoder = getattr(stage, "encoder", None)
    if encoder is None or not hasattr(encoder, "num_resolutions"):
        return None
    side = int(size if size is not None and size > 0 else encoder.resolution) // 2 ** (encoder.num_resolutions - 1)
    return side, side
