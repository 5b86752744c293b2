"""Training a transformer from stored tokens (`scripts/quantize_dataset.py`, `ilat_ext.data.tokens`):
a batch of tokens trains without running the frozen stages at each step. The token file's
stages are checked against the model's (codebook sizes, downsampling, `stage_fingerprint`) when
training or validation starts, and `log_images` decodes the stored tokens.

`TokenTraining` is a mixin of `TamingTransformer`; it needs the model's `first_stage_model`,
`cond_stage_model`, `transformer`, `decode_tokens`, `_edit_tokens` and `sequence_inputs`.
"""
import math
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch

from ilat_ext.models.stages import stage_fingerprint


def datasets_in(obj: Any, depth: int = 0) -> Iterator[Any]:
    """Datasets reachable from a dataloader (or a list/dict of them), through wrappers that keep the
    inner dataset in `.dataset` (MaskedDataset, Subset, DataLoader) or `.data` (WrappedDataset)."""
    if obj is None or depth > 8:
        return
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from datasets_in(o, depth + 1)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            yield from datasets_in(o, depth + 1)
    elif isinstance(obj, torch.utils.data.DataLoader):
        yield from datasets_in(obj.dataset, depth + 1)
    else:
        yield obj
        for attr in ("dataset", "data"):
            inner = getattr(obj, attr, None)
            if isinstance(inner, torch.utils.data.Dataset):
                yield from datasets_in(inner, depth + 1)


class TokenTraining:
    """Checks, batches and image logs of token training (see the module docstring)."""

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
        for dataset in datasets_in(loaders):
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
