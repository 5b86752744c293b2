"""Net2Net transformer (Esser et al. 2021) on Lightning 2: the "Taming" baseline.

A subclass of upstream `taming.models.cond_transformer.Net2NetTransformer` with upstream's
parameter names (`transformer.*`, `first_stage_model.*`, `cond_stage_model.*`), so public Taming
checkpoints load. What differs, and why:
- `init_from_ckpt` goes through the safe loader and reports keys (upstream deletes dict keys
  while iterating over them, which crashes as soon as an ignore key matches).
- The condition stage may be `__is_first_stage__` (reuse the first stage) or
  `__is_unconditional__` (one start-of-sequence token), which the PyPI release lacks.
- Frozen stages are frozen for real (`ilat_ext.models.stages.freeze`).
- `learning_rate`, `weight_decay`, `betas`, `warmup_steps` and `decay_steps` are arguments
  (`ilat_ext.models.schedule`; main.py still sets the learning rate from `base_learning_rate`).
- Editing, for the side-by-side comparison with iLAT (paper Fig. 4, Table 2):
  `sample_edit` is Taming's edit (every token from the first masked one to the end of the raster
  is regenerated, full quantized decoding); `sample_local` is Taming* (the same weights sampled with
  iLAT's LA mask in taming's layout, masked tokens only, Eq. 4 decoding when the first stage is a
  TS-VQGAN). Both use the KV-cached sampler of `ilat_ext.modules.sampling`. Upstream's `sample()`
  (full AR, no cache) still works and is the reference for whole-image AR time.
- Options of ours (`ilat_ext.models.options`, off by default): `pos_emb_init`,
  `aligned_condition`, `aligned_kernel`.
- Training from stored tokens (`ilat_ext.models.token_training`): a batch with "z_full" and
  "c_indices" trains without running the frozen stages (`forward_tokens`, with upstream's pkeep
  corruption and permuter).
"""
import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

import ilat_ext  # noqa: F401  (its taming.main hook makes taming.models importable on Lightning 2)
from taming.models.cond_transformer import Net2NetTransformer as _UpstreamNet2Net

from ilat_ext.masks import check_pixel_mask, la_attention_mask, la_causal_positions, latent_mask
from ilat_ext.models.base import CheckpointMixin
from ilat_ext.models.options import ConditioningOptions, aligned_features, build_aligned, init_grid_positions
from ilat_ext.models.options import reject_options
from ilat_ext.models.schedule import TransformerOptimization, check_schedule
from ilat_ext.models.stages import SOSProvider, freeze
from ilat_ext.models.token_training import TokenTraining
from ilat_ext.modules.sampling import SampleResult, sample_tokens
from ilat_ext.util import instantiate_from_config

logger = logging.getLogger(__name__)


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


class TamingTransformer(TokenTraining, TransformerOptimization, CheckpointMixin, _UpstreamNet2Net):
    """Upstream's constructor (with its later `unconditional`) plus `sos_token`, `learning_rate`, `weight_decay`, `betas`, `mask_key`,
    the schedule (`warmup_steps`, `decay_steps`) and the conditioning options of ours
    (`ilat_ext.models.options.ConditioningOptions`: `pos_emb_init`, `aligned_condition`,
    `aligned_kernel`). Any other keyword is refused (a removed option with the reason it went).

    `forward(x (B, C, H, W), c)` -> `(logits (B, h*w, vocab), target (B, h*w))`; `sample(...)` is
    upstream's full autoregressive sampler (the reference for whole-image AR time).

    Subclasses take their own keywords and pass the rest here; they add their modules in
    `build_modules` (called before `ckpt_path` is loaded).
    """

    ddp_find_unused_parameters = False
    n_extra_positions = 0  # condition features between the condition tokens and the grid (pose: 13)

    def __init__(self, transformer_config, first_stage_config, cond_stage_config, permuter_config=None,
                 ckpt_path: Optional[str] = None, ignore_keys: Sequence[str] = (), first_stage_key: str = "image",
                 cond_stage_key: str = "depth", downsample_cond_size: int = -1, pkeep: float = 1.0,
                 sos_token: int = 0, learning_rate: Optional[float] = None, weight_decay: float = 0.01,
                 betas: Tuple[float, float] = (0.9, 0.95), mask_key: str = "mask", warmup_steps: int = 0,
                 decay_steps: Union[int, str, None] = None, pos_emb_init: Optional[str] = None,
                 aligned_condition: bool = False, aligned_kernel: int = 1, unconditional: bool = False,
                 **removed_options):
        reject_options(type(self).__name__, removed_options)
        if unconditional:  # upstream's later spelling (configs/custom_transformer.yaml): cond_stage_config is unused
            cond_stage_config = "__is_unconditional__"
        warmup_steps, decay_steps = check_schedule(warmup_steps, decay_steps)
        self.conditioning = ConditioningOptions(pos_emb_init, aligned_condition, aligned_kernel)
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
        self.build_modules()
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys)

    @property
    def pos_emb_init(self) -> Optional[str]:
        return self.conditioning.pos_emb_init

    def build_modules(self) -> None:
        """The conditioning options' modules (`aligned_emb`, `aligned_conv`) and the grid start of
        the positions. Subclasses extend it (call super first: the parameters' random start follows
        the order they are made in)."""
        if self.pos_emb_init == "grid":
            init_grid_positions(self)
        self.aligned_emb, self.aligned_conv = build_aligned(self, self.conditioning)

    def position_features(self, c_idx: torch.Tensor, n_pre: int, n_grid: int,
                          extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The backbone's `pos_features` for a sequence of n_pre leading positions and n_grid grid
        tokens: (B, n_pre + n_grid - 1, C) from `aligned_features`; None without `aligned_condition`.
        `extra`: the extra condition features of the sequence (the pose model's map); unused here."""
        if self.aligned_emb is None:
            return None
        return aligned_features(self.aligned_emb, self.aligned_conv, self.aligned_grid, c_idx, n_pre, n_grid)

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

    def init_first_stage_from_ckpt(self, config):
        self.first_stage_model = freeze(instantiate_from_config(config))

    def init_cond_stage_from_ckpt(self, config):
        if config == "__is_first_stage__":
            logger.info("Using the first stage also as the condition stage.")
            self.cond_stage_model = self.first_stage_model
        elif config == "__is_unconditional__":
            logger.info("Training unconditionally; start-of-sequence token %s.", self.sos_token)
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

    # ------------------------------------------------------------------ editing
    layout = "taming"  # condition tokens first, no start tokens (upstream's sequence)
    input_last_token = False  # the last grid token is never an input (upstream's sequence)

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
        before the grid tokens. Taming's layout: the condition tokens as a prefix."""
        if extra is not None:
            raise ValueError(f"{type(self).__name__} takes no extra condition features")
        return None, c_indices, c_indices.shape[1]

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
            gen, allowed = m_q, la_attention_mask(m_q, n_cond, self.layout, self.input_last_token)
            sequential = la_causal_positions(m_q, n_cond, self.layout, self.input_last_token)
        else:  # Taming: plain causal attention, regenerate from the first masked token to the end
            L = m_q.shape[1]
            first = torch.where(m_q.any(1), m_q.float().argmax(1), L)            # (B,)
            gen = torch.arange(L, device=device)[None] >= first[:, None]
            S = n_pre + L - (0 if self.input_last_token else 1)
            allowed = torch.ones(S, S, dtype=torch.bool, device=device).tril().expand(B, S, S)
            sequential = torch.arange(S, device=device)[None] >= (n_pre - 1 + first)[:, None]
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        n_codes = self.first_stage_model.quantize.n_e
        result: SampleResult = sample_tokens(
            self.transformer, z, gen, allowed, sequential, emb, prefix, greedy=greedy, temperature=temperature,
            top_k=top_k, generator=generator, vocab_limit=n_codes, use_cache=use_cache, progress=progress,
            record_logits=return_logits, pos_features=self.position_features(c_idx, n_pre, m_q.shape[1], extra),
            input_last=self.input_last_token)
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
                           "in ilat_ext.data.mask_sources.MaskedDataset or set mask_key")
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
