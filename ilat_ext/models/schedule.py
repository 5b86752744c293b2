"""Optimisation of the transformers: AdamW parameter groups and the per-batch learning-rate
schedule (linear warm-up, then linear decay to 0; the release's: 10k warm-up, 0 at 300k steps).

`TransformerOptimization` is the `configure_optimizers` the Taming / iLAT transformers share; the
schedule is a LambdaLR stepped per batch, so Lightning restores it on resume (the release restarts
its schedule).
"""
from numbers import Integral
from typing import Optional, Tuple, Union

import torch
from torch import nn

FOLLOW_MAX_STEPS = "max_steps"


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
    `decay_steps` (None: constant after warm-up)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay_steps is None:
        return 1.0
    return max(0.0, (decay_steps - step) / max(1, decay_steps - warmup_steps))


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


class TransformerOptimization:
    """`configure_optimizers` for a LightningModule with `learning_rate`, `weight_decay`, `betas`,
    `warmup_steps` and `decay_steps` (validated by `check_schedule`): AdamW over
    `transformer_param_groups` (frozen stages have no trainable parameters), and the schedule
    stepped per batch when there is one."""

    def configure_optimizers(self):
        if self.learning_rate is None:
            raise ValueError(f"{type(self).__name__}.learning_rate is not set: pass learning_rate= or let "
                             "main.py set it from model.base_learning_rate")
        groups = transformer_param_groups(self, self.weight_decay)
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
