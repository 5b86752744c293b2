"""A second transformer backbone built from x-transformers' attention and feed-forward modules.

`XTransformer` is a pre-norm decoder made of `x_transformers.x_transformers.Attention` (on torch's
`scaled_dot_product_attention`, `flash=True`) and `x_transformers.x_transformers.FeedForward`
blocks, with a learned absolute position embedding, for new iLAT models that want x-transformers'
attention/feed-forward variants (qk-norm, grouped-query attention, GLU feed-forward, gating, ...).
It cannot load minGPT/Taming checkpoints; `ilat_ext.modules.gpt.GPT` is the backbone for those.

It implements exactly the backbone interface of `ilat_ext.modules.gpt` (see that module's docstring):

    forward(idx (B, T) long | None, embeddings (B, E, C) | None = None, targets=None, *,
            attn_mask (B, S, S_keys) bool | None = None, positions (B, S) | (S,) long | None = None,
            cache: KVCache | None = None) -> (logits (B, S, vocab_size), loss | None)

S = E + T, embeddings first. Without a mask the attention is causal. With a cache, S_keys =
cache.length + S: the cached keys first, in the order they were appended, then the new ones; the
new keys/values are appended to the cache (`KVCache` of `ilat_ext.modules.gpt`, (B, H_kv, N, D)
per layer, H_kv = the number of key/value heads).

Why attention must not depend on the order of keys: iLAT's cached local sampler
(`ilat_ext.modules.sampling.sample_tokens`) computes the condition and global positions first and
then the causal positions one at a time, so keys sit in the cache in processing order, not in
sequence order, and positions may differ per batch element. A position therefore enters only
through the absolute embedding added to the input (`pos_emb`, indexed by `positions`), and the
attention scores must be a function of (query, key) contents alone. x-transformers options that
look at where a key sits in the key list (rotary/xpos/polar embeddings, ALiBi, T5 relative bias,
dynamic position bias, CoPE, data-dependent ALiBi, relative projection bias, `max_attend_past`,
token shift) would silently compute something else for a reordered cache, so they are rejected
with a ValueError, as is anything else outside a list of options checked to be order-free and
cache-compatible (`ATTN_OPTIONS`).
"""
import inspect
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
from torch import nn
from x_transformers.attend import Intermediates
from x_transformers.x_transformers import Attention, FeedForward

from ilat_ext.modules.gpt import BackboneMixin, KVCache, causal_mask

# Attention options that act on each query/key/value on its own (or on a whole row of scores), so
# attention stays invariant to the order of keys, and that work with SDPA, a boolean mask and
# x-transformers' cached_kv (its cached keys are taken after qk-norm, so caching them is exact).
ATTN_OPTIONS = frozenset({
    "dim_head", "value_dim_head", "kv_heads", "one_kv_head",
    "qk_norm", "qk_norm_groups", "qk_norm_scale", "qk_norm_dim_scale", "qk_rmsnorm", "k_rmsnorm",
    "l2_distance", "add_zero_kv", "head_scale", "on_attn", "zero_init_output",
    "gate_value_heads", "gate_values", "swiglu_values", "gate_values_rank", "gate_values_headwise",
    "output_gate", "output_gate_rank", "output_gate_headwise", "low_rank_silu_gates",
})

# Left out although order-free: value_rmsnorm (2.31.10 builds it for `heads` heads of `dim_head`, so
# it breaks with kv_heads/one_kv_head or value_dim_head).

# Name prefixes that make attention depend on key order or distance (x-transformers' AttentionLayers
# spells most of them; a user may try them here).
_ORDER_DEPENDENT = ("rotary", "xpos", "alibi", "rel_pos", "dynamic_pos", "polar", "cope", "use_cope",
                    "data_dependent_alibi", "rel_proj", "use_rel_proj_pos_bias", "max_attend_past",
                    "shift_tokens", "latent_rope", "rotate_num_heads", "disable_abs_pos_emb")

_OTHER_REASONS = {
    "num_mem_kv": "memory key/values are prepended to the keys, and x-transformers does not widen a given "
                  "attn_mask for them (the (B, S, S_keys) mask would no longer match the keys)",
    "causal": "masking is the backbone's job: causal without attn_mask, attn_mask otherwise",
    "flash": "always on: attention runs through scaled_dot_product_attention",
    "dim": "set by n_embd", "heads": "set by n_head", "dropout": "set by attn_pdrop",
    "sublayer_dropout": "set by resid_pdrop",
}

_FF_OWN = {"dim": "set by n_embd", "dim_out": "the output width is n_embd", "mult": "set by ff_mult",
           "glu": "set by ff_glu", "sublayer_dropout": "set by resid_pdrop"}


def _check_attn_kwargs(attn_kwargs: Dict[str, Any]) -> None:
    known = set(inspect.signature(Attention.__init__).parameters)
    for key in attn_kwargs:
        if key.startswith(_ORDER_DEPENDENT):
            raise ValueError(f"attn_kwargs[{key!r}]: makes attention depend on the order or distance of keys; "
                             "XTransformer's keys arrive in any order (KV cache, out-of-order positions), so "
                             "positions enter only through the learned absolute pos_emb")
        if key in _OTHER_REASONS:
            raise ValueError(f"attn_kwargs[{key!r}] is not accepted: {_OTHER_REASONS[key]}")
        if key not in known:
            raise ValueError(f"attn_kwargs[{key!r}]: unknown x-transformers Attention option")
        if key not in ATTN_OPTIONS:
            raise ValueError(f"attn_kwargs[{key!r}] is not supported by XTransformer: only options that keep "
                             "attention invariant to key order and work with SDPA, a boolean mask and the KV "
                             f"cache are, namely {sorted(ATTN_OPTIONS)}")


def _check_ff_kwargs(ff_kwargs: Dict[str, Any]) -> None:
    # The feed-forward acts on each position alone, so any of its own options keeps order invariance.
    known = set(inspect.signature(FeedForward.__init__).parameters) - {"self"}
    for key in ff_kwargs:
        if key in _FF_OWN:
            raise ValueError(f"ff_kwargs[{key!r}] is not accepted: {_FF_OWN[key]}")
        if key not in known:
            raise ValueError(f"ff_kwargs[{key!r}]: unknown x-transformers FeedForward option")


class XBlock(nn.Module):
    """Pre-norm residual block: x + Attention(LN(x)), then x + FeedForward(LN(x))."""

    def __init__(self, n_embd: int, n_head: int, attn_pdrop: float, resid_pdrop: float, ff_mult: float,
                 ff_glu: bool, attn_kwargs: Dict[str, Any], ff_kwargs: Dict[str, Any]):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        # causal=False: the mask is always given explicitly. (In x-transformers 2.31.10 the flash path
        # ignores a per-call `causal=` and ANDs a causal pattern into any mask if built causal.)
        self.attn = Attention(n_embd, heads=n_head, causal=False, flash=True, dropout=attn_pdrop,
                              sublayer_dropout=resid_pdrop, **attn_kwargs)
        self.ff = FeedForward(n_embd, mult=ff_mult, glu=ff_glu, sublayer_dropout=resid_pdrop, **ff_kwargs)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, cache: Optional[KVCache] = None,
                layer: int = 0) -> torch.Tensor:
        """x (B, S, C); attn_mask (B or 1, S, S_keys) bool over [cached keys, new keys] -> (B, S, C)."""
        if cache is None:
            h = self.attn(self.ln1(x), attn_mask=attn_mask[:, None])
        else:
            # x-transformers' own cache path: it concatenates the past keys/values (taken after its
            # projections and qk-norms) in front of the new ones and returns all of them as
            # `cached_kv`; the new part goes into our KVCache so that the cache object stays ours.
            past = cache.layer_length(layer)
            previous = Intermediates(cached_kv=cache.get(layer)) if past else None
            h, inter = self.attn(self.ln1(x), attn_mask=attn_mask[:, None], cache=previous,
                                 return_intermediates=True)
            k, v = inter.cached_kv
            cache.append(layer, k[:, :, past:], v[:, :, past:])
        x = x + h
        return x + self.ff(self.ln2(x))


class XTransformer(BackboneMixin, nn.Module):
    """Pre-norm transformer of x-transformers Attention/FeedForward blocks with the GPT backbone interface.

    forward(idx, embeddings=None, targets=None, *, attn_mask=None, positions=None, cache=None)
        -> (logits (B, S, vocab_size), cross-entropy loss if targets else None); see the module
    docstring for shapes. Parameters: `tok_emb`, `pos_emb` (1, block_size, n_embd),
    `blocks.{i}.{ln1,attn,ln2,ff}`, `ln_f`, `head` (no bias).
    attn_kwargs: extra `x_transformers.x_transformers.Attention` options from `ATTN_OPTIONS`
        (e.g. dim_head, kv_heads, qk_norm); dim_head defaults to n_embd // n_head (minGPT's width).
    ff_kwargs: extra `FeedForward` options (e.g. swish, relu_squared, post_act_ln, no_bias).
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 12, n_head: int = 8, n_embd: int = 256,
                 embd_pdrop: float = 0.0, attn_pdrop: float = 0.0, resid_pdrop: float = 0.0,
                 ff_mult: float = 4, ff_glu: bool = False, attn_kwargs: Optional[Dict[str, Any]] = None,
                 ff_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        attn_kwargs, ff_kwargs = dict(attn_kwargs or {}), dict(ff_kwargs or {})
        _check_attn_kwargs(attn_kwargs)
        _check_ff_kwargs(ff_kwargs)
        if "dim_head" not in attn_kwargs:
            if n_embd % n_head:
                raise ValueError(f"n_embd {n_embd} must be divisible by n_head {n_head} "
                                 "(or give attn_kwargs['dim_head'])")
            attn_kwargs["dim_head"] = n_embd // n_head
        self.vocab_size, self.block_size = int(vocab_size), int(block_size)
        self.n_layer, self.n_head, self.n_embd = int(n_layer), int(n_head), int(n_embd)
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, n_embd))
        self.drop = nn.Dropout(embd_pdrop)
        self.blocks = nn.ModuleList([XBlock(n_embd, n_head, attn_pdrop, resid_pdrop, ff_mult, ff_glu,
                                            attn_kwargs, ff_kwargs) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        # Embeddings and head as minGPT (normal, std 0.02; pos_emb too, unlike minGPT's zeros, so that
        # positions matter from the first step); x-transformers' modules keep their own init.
        for weight in (self.tok_emb.weight, self.pos_emb, self.head.weight):
            nn.init.normal_(weight, mean=0.0, std=0.02)
        # upstream code reads `transformer.config.vocab_size` (Net2NetTransformer's pkeep corruption)
        self.config = SimpleNamespace(vocab_size=self.vocab_size, block_size=self.block_size,
                                      n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd)

    def prepare_mask(self, attn_mask, past, length, device):
        # x-transformers' Attention gets an explicit mask always (its SDPA path ignores a per-call
        # `causal`): causal in processing order, as GPT's.
        if attn_mask is None:
            return causal_mask(past + length, device=device)[past:][None]            # (1, S, past + S)
        return attn_mask.to(device)
