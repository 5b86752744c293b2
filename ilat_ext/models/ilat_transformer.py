"""iLAT transformer (Cao et al. 2021, Sec. 3.2, Eq. 5-8, Fig. 2, Fig. 3b).

A Net2NetTransformer (through `ilat_ext.models.TamingTransformer`) whose first stage is a frozen
TS-VQGAN (the target is encoded with its mask, so tokens outside the edited region never saw
it) and whose transformer is trained with the local-autoregressive (LA) attention mask
(`ilat_ext.masks.la_attention_mask`): the tokens to generate are autoregressive among themselves
and see all known tokens, also later ones in the raster. The loss (Eq. 6) covers the masked
tokens only; with `lm_rate` > 0 that fraction of each batch trains as a plain causal LM on every
token (the release's `lm_rate`).

Sequence ("start" layout, the default; the release's 514 tokens for 16x16 sketch + 16x16 image):

    [c_s, c_1 .. c_N, extra features (pose), z_s, z_0 .. z_{L-2}]

c_s and the condition tokens c_i use their own embedding table `cond_emb` (the release's separate
sketch embedding), z_s is the learned `z_start`, grid tokens use the backbone's `tok_emb`. The
"taming" layout ([c_1 .. c_N, z_0 .. z_{L-2}], one shared table) lets a public Taming
transformer be finetuned with the LA mask.

Training and sampling use the same mask, so `sample_local` can use a KV cache (see
`ilat_ext.modules.sampling`): the condition and global positions once, then one causal position
at a time; the authors' release instead rebuilds a different mask and reruns all 514 positions
for every token.

Training from stored tokens (`scripts/quantize_dataset.py`): a batch with "z_indices" (encoded
with its mask), "token_mask" (M_q) and "c_indices" goes through `forward_tokens`, the part of
`forward` after encoding, so the frozen stages do not run at each step.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ilat_ext.masks import LA_LAYOUTS, la_attention_mask
from ilat_ext.models.cond_transformer import TamingTransformer
from ilat_ext.models.stages import freeze
from ilat_ext.util import instantiate_from_config


class ILATTransformer(TamingTransformer):
    """Net2NetTransformer's constructor plus iLAT's own arguments; every other keyword (stages,
    keys, optimisation, the conditioning options) is `TamingTransformer`'s, passed up as given.

    Args (beyond `TamingTransformer`'s):
        layout: "start" (iLAT's sequence with start tokens and a separate condition embedding) or
            "taming" (upstream's sequence, for finetuning Taming checkpoints).
        lm_rate: fraction of each training batch trained with the plain causal mask and a loss on
            every token (0 = pure LA training).
        baseline_config: optional config of a trained `TamingTransformer` (with its ckpt_path) whose
            Taming* edit `log_images` shows next to iLAT's; not part of this model's weights.
        input_last_token: the "start" layout with every grid token an input (the authors' released
            514-position sequence, [c_s, c_1..c_N, z_s, z_0..z_{L-1}]; the last position predicts
            nothing, but its token is seen by the rows allowed to see it). False (default): the last
            grid token is never an input (513 positions for 16 x 16 + 16 x 16).
    cond_stage_key defaults to "sketch". `pkeep` (Taming's input corruption) must stay 1: the LA
    training does not use it.

    forward(x (B, C, H, W), c (B, C_c, H_c, W_c), mask (B, 1, H, W), extra=None)
        -> (logits (B, L, V), target (B, L), loss_weight (B, L) float)
    forward_tokens(z (B, L), c_idx (B, N), m_q (B, L) bool, extra=None) -> the same, from tokens
        (what `forward` does after encoding; `shared_step` uses it for batches of stored tokens).
    """

    token_batch_key = "z_indices"

    def __init__(self, *args, layout: str = "start", lm_rate: float = 0.0, baseline_config=None,
                 input_last_token: bool = False, **kwargs):
        if layout not in LA_LAYOUTS:
            raise ValueError(f"layout must be one of {LA_LAYOUTS}, got {layout!r}")
        if not isinstance(input_last_token, bool):
            raise ValueError(f"input_last_token must be true or false, got {input_last_token!r}")
        if input_last_token and layout != "start":
            raise ValueError("input_last_token needs layout 'start' (the release's sequence)")
        if input_last_token and kwargs.get("aligned_condition"):
            raise ValueError("input_last_token and aligned_condition cannot be combined (the aligned features are "
                             "laid out for L - 1 grid inputs)")
        self.input_last_token = input_last_token
        if not 0.0 <= float(lm_rate) <= 1.0:
            raise ValueError(f"lm_rate must be in [0, 1], got {lm_rate}")
        if kwargs.get("pkeep", 1.0) != 1.0:
            raise ValueError(f"pkeep {kwargs['pkeep']!r}: iLAT's LA training does not corrupt its inputs; "
                             "pkeep must be 1.0")
        kwargs.setdefault("cond_stage_key", "sketch")
        self._layout = layout
        self.lm_rate = float(lm_rate)
        self._baseline_config = baseline_config
        self._baseline = []  # a plain list: the baseline is not a submodule and not in this model's weights
        super().__init__(*args, **kwargs)

    def build_modules(self) -> None:
        """iLAT's start tokens and condition embedding (the "start" layout), then the baseline."""
        super().build_modules()
        n_embd = self.transformer.n_embd
        n_codes = self.first_stage_model.quantize.n_e
        if self.transformer.vocab_size < n_codes:
            raise ValueError(f"transformer vocab_size {self.transformer.vocab_size} is smaller than the first "
                             f"stage's codebook ({n_codes} codes)")
        if self.layout == "start":
            # condition codes + c_s (index n_cond_codes); the unconditional model has c_s only
            self.n_cond_codes = 0 if self.be_unconditional else int(self.cond_stage_model.quantize.n_e)
            self.cond_emb = nn.Embedding(self.n_cond_codes + 1, n_embd)
            self.z_start = nn.Parameter(torch.zeros(1, 1, n_embd))
            nn.init.normal_(self.cond_emb.weight, std=0.02)
            nn.init.normal_(self.z_start, std=0.02)
        elif self.be_unconditional:
            raise ValueError("the taming layout needs a condition; use layout 'start' for unconditional editing")
        if self._baseline_config is not None:
            self._baseline.append(freeze(instantiate_from_config(self._baseline_config)))

    @property
    def layout(self) -> str:
        return self._layout

    # ------------------------------------------------------------------ sequence
    def encode_to_c(self, c: torch.Tensor):
        if self.be_unconditional and self.layout == "start":  # only c_s: no condition tokens
            return None, torch.zeros(c.shape[0], 0, dtype=torch.long, device=c.device)
        return super().encode_to_c(c)

    def sequence_inputs(self, c_indices: torch.Tensor, extra: Optional[torch.Tensor] = None):
        """-> (embeddings, prefix, n_cond). "start": embeddings [c_s, c_1..c_N, extra, z_s], no prefix."""
        if self.layout == "taming":
            if extra is not None:
                raise ValueError("extra condition features need the 'start' layout")
            return super().sequence_inputs(c_indices)
        B = c_indices.shape[0]
        c_s = torch.full((B, 1), self.n_cond_codes, dtype=torch.long, device=c_indices.device)
        parts = [self.cond_emb(torch.cat([c_s, c_indices], dim=1))]                                                # (B, 1 [+ N], C)
        if extra is not None:
            if extra.dim() != 3 or extra.shape[0] != B or extra.shape[2] != self.transformer.n_embd:
                raise ValueError(f"extra condition features of shape {tuple(extra.shape)} must be "
                                 f"(B={B}, E, n_embd={self.transformer.n_embd})")
            parts.append(extra.to(parts[0].dtype))
        n_cond = sum(p.shape[1] for p in parts)
        parts.append(self.z_start.expand(B, 1, -1).to(parts[0].dtype))
        return torch.cat(parts, dim=1), None, n_cond

    def condition_features(self, batch) -> Optional[torch.Tensor]:
        """Extra condition features (B, E, n_embd) from the batch; none here (the pose model adds them)."""
        return None

    # ------------------------------------------------------------------ training (Eq. 5-8)
    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: Optional[torch.Tensor] = None,
                extra: Optional[torch.Tensor] = None):
        """Teacher-forced logits under the LA mask; mask None = every token to generate."""
        if mask is None:
            mask = torch.ones_like(x[:, :1])
        m_q = self.token_mask(x, mask)                                                 # (B, L)
        z, _ = self.encode_target(x, mask)
        _, c_idx = self.encode_to_c(self.check_condition(c, x))
        return self.forward_tokens(z, c_idx, m_q, extra)

    def forward_tokens(self, z: torch.Tensor, c_idx: torch.Tensor, m_q: torch.Tensor,
                       extra: Optional[torch.Tensor] = None):
        """Teacher-forced logits under the LA mask from tokens: z (B, L) grid tokens encoded with the
        mask, c_idx (B, N) condition tokens, m_q (B, L) bool latent mask, extra (B, E, n_embd) or None
        -> (logits (B, L, V), target z (B, L), loss_weight (B, L) float)."""
        z, c_idx, m_q = z.long(), c_idx.long(), m_q.bool()
        if m_q.shape != z.shape or c_idx.dim() != 2 or c_idx.shape[0] != z.shape[0]:
            raise ValueError(f"forward_tokens needs z (B, L), c_idx (B, N) and m_q (B, L); got "
                             f"{tuple(z.shape)}, {tuple(c_idx.shape)}, {tuple(m_q.shape)}")
        emb, prefix, n_cond = self.sequence_inputs(c_idx, extra)
        allowed = la_attention_mask(m_q, n_cond, self.layout, self.input_last_token)  # (B, S, S)
        weight = m_q.float()
        if self.training and self.lm_rate > 0:
            lm = torch.rand(z.shape[0], device=z.device) < self.lm_rate                # (B,)
            causal = torch.ones_like(allowed[0]).tril()
            allowed = torch.where(lm[:, None, None], causal, allowed)
            weight = torch.where(lm[:, None], torch.ones_like(weight), weight)
        inputs = z if self.input_last_token else z[:, :-1]
        idx = inputs if prefix is None else torch.cat([prefix, inputs], dim=1)
        n_pre = (0 if emb is None else emb.shape[1]) + (0 if prefix is None else prefix.shape[1])
        features = self.position_features(c_idx, n_pre, z.shape[1], extra)
        logits, _ = self.transformer(idx, emb, attn_mask=allowed, pos_features=features)
        return logits[:, n_pre - 1:n_pre - 1 + z.shape[1]], z, weight

    def sequence_positions(self, n_cond_tokens: int, n_grid: int) -> int:
        return super().sequence_positions(n_cond_tokens, n_grid) + (1 if self.input_last_token else 0)

    def shared_step(self, batch, batch_idx):
        if self.token_batch_key in batch:  # stored tokens (ilat_ext.data.tokens): no encoder runs
            logits, target, weight = self.forward_tokens(
                self.batch_tokens(batch, "z_indices"), self.batch_tokens(batch, "c_indices"),
                self.batch_tokens(batch, "token_mask"), self.condition_features(batch))
        else:
            x, c = (self.get_xc(batch) if not self.be_unconditional
                    else (self.get_input(self.first_stage_key, batch), None))
            mask = self.get_mask(batch, x)
            logits, target, weight = self(x, c if c is not None else x, mask, self.condition_features(batch))
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        # Eq. 6: the masked tokens only; a batch with nothing to predict gives a zero loss with a graph
        return (nll * weight.reshape(-1)).sum() / weight.sum().clamp(min=1.0)

    # ------------------------------------------------------------------ editing
    @property
    def trained_causal(self) -> bool:
        """Only an lm_rate-1 model (every row trained as a plain causal LM: a vanilla-AR baseline in
        this sequence layout, e.g. the pose task's Taming) was trained for Taming's causal edit."""
        return self.lm_rate >= 1.0

    def sample_edit(self, *args, **kwargs):
        if not self.trained_causal:
            raise NotImplementedError(f"this model was trained with the LA mask (lm_rate {self.lm_rate}); its "
                                      "causal-mask edit is not a baseline. Use a Taming run's sample_edit, or a "
                                      "model trained with lm_rate 1.0 (the vanilla-AR baseline)")
        return super().sample_edit(*args, **kwargs)

    def _log_edits(self, x, mask, c):
        log = {"ilat": self.sample_local(x, mask, c).image}
        if self._baseline:
            baseline = self._baseline[0].to(self.device)
            log["taming_star"] = baseline.sample_local(x, mask, c).image
        return log

    def _log_token_edits(self, z, kept, m_q, c_idx):
        # the Taming* baseline is left out: its stages need not be the ones the tokens came from
        return {"ilat": self._edit_tokens(z, kept, m_q, c_idx, mode="local").image}
