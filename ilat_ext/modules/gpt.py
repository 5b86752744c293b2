"""minGPT-compatible GPT backbone with a boolean attention mask and a KV cache.

The transformer of taming's Net2NetTransformer (Karpathy's minGPT, as vendored in
`taming.modules.transformer.mingpt`) with the same constructor and parameter names
(`tok_emb`, `pos_emb`, `blocks.{i}.{ln1,ln2,attn.{key,query,value,proj},mlp.{0,2}}`, `ln_f`,
`head`), so public Taming transformer checkpoints load for finetuning and for Taming*
(paper Fig. 4d). What differs, and why:
- Attention runs through `torch.nn.functional.scaled_dot_product_attention` with an optional
  boolean mask (B, S, S_keys): iLAT's local-autoregressive mask (Eq. 7-8,
  `ilat_ext.masks.la_attention_mask`) instead of the fixed causal buffer.
- Positions may be given explicitly and keys/values may be appended to a `KVCache`, so a sampler
  can process sequence positions in any order (iLAT's cached local sampling computes condition
  and global positions once, then one causal position at a time).
- The causal mask is not a persistent buffer. minGPT stores it in every checkpoint as
  `blocks.{i}.attn.mask` (block_size^2 floats per layer); those entries are checked (they must be
  the causal pattern, with minGPT's optional `n_unmasked` prefix) and consumed when loading.

The backbone interface (shared with `ilat_ext.modules.xtransformer.XTransformer`):

    forward(idx (B, T) long | None, embeddings (B, E, C) | None = None, targets=None, *,
            attn_mask (B, S, S_keys) bool | None = None, positions (B, S) | (S,) long | None = None,
            cache: KVCache | None = None, pos_features (B, P, C) | None = None)
        -> (logits (B, S, vocab_size), loss | None)

S = E + T: the embeddings come first (minGPT's convention). `pos_features` are per-element inputs
by sequence POSITION (P > every position used), added to the input at each position like the
position embedding; a model's aligned condition (`TamingTransformer(aligned_condition=True)`) comes
this way, so a sampler that visits positions in any order adds the same features as training.
Without a mask the attention is causal. With a cache, S_keys = cache.length + S: the cached keys
first, in the order they were appended, then the new ones; the new keys/values are appended to the
cache.
"""
from types import SimpleNamespace
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values per layer, in the order positions were processed: (B, H, N, head_dim) each.

    Preallocated for `capacity` positions (grown by doubling when exceeded), so a decoding step
    writes one position instead of copying the whole cache."""

    def __init__(self, n_layer: int, capacity: Optional[int] = None):
        self.capacity = capacity
        self._k: List[Optional[torch.Tensor]] = [None] * n_layer
        self._v: List[Optional[torch.Tensor]] = [None] * n_layer
        self._len = [0] * n_layer

    @property
    def length(self) -> int:
        """Positions held (read it before a forward pass: layers append one after another)."""
        return self._len[0]

    def layer_length(self, layer: int) -> int:
        return self._len[layer]

    @property
    def n_layer(self) -> int:
        return len(self._len)

    def get(self, layer: int) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The (B, H, N, D) keys and values held for `layer` (None, None when empty)."""
        n = self._len[layer]
        if self._k[layer] is None:
            return None, None
        return self._k[layer][:, :, :n], self._v[layer][:, :, :n]

    @property
    def keys(self) -> List[Optional[torch.Tensor]]:
        return [None if k is None else k[:, :, :n] for k, n in zip(self._k, self._len)]

    @property
    def values(self) -> List[Optional[torch.Tensor]]:
        return [None if v is None else v[:, :, :n] for v, n in zip(self._v, self._len)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Append (B, H, T, D) keys/values for `layer`; returns all keys/values of that layer."""
        n, t = self._len[layer], k.shape[2]
        buf = self._k[layer]
        if buf is None or n + t > buf.shape[2]:
            size = max(self.capacity or 0, 2 * (n + t) if buf is not None else n + t)
            new_k = k.new_empty(k.shape[0], k.shape[1], size, k.shape[3])
            new_v = v.new_empty(v.shape[0], v.shape[1], size, v.shape[3])
            if buf is not None:
                new_k[:, :, :n], new_v[:, :, :n] = buf[:, :, :n], self._v[layer][:, :, :n]
            self._k[layer], self._v[layer] = new_k, new_v
        self._k[layer][:, :, n:n + t] = k
        self._v[layer][:, :, n:n + t] = v
        self._len[layer] = n + t
        return self._k[layer][:, :, :n + t], self._v[layer][:, :, :n + t]


def causal_mask(size: int, n_unmasked: int = 0, device=None) -> torch.Tensor:
    """minGPT's mask as booleans: lower triangle, plus full attention within the first `n_unmasked`."""
    mask = torch.ones(size, size, dtype=torch.bool, device=device).tril()
    if n_unmasked > 0:
        mask[:n_unmasked, :n_unmasked] = True
    return mask


def check_backbone_inputs(backbone: nn.Module, length: int, attn_mask: Optional[torch.Tensor],
                          positions: Optional[torch.Tensor], cache, batch: int) -> torch.Tensor:
    """Validates shapes shared by both backbones; returns positions as (B or 1, S) long."""
    past = cache.length if cache is not None else 0
    if positions is None:
        if past:
            raise ValueError("positions are required when the KV cache already holds keys")
        positions = torch.arange(length)
    positions = torch.as_tensor(positions)
    if positions.dim() == 1:
        positions = positions[None]
    if positions.shape[-1] != length or positions.shape[0] not in (1, batch):
        raise ValueError(f"positions of shape {tuple(positions.shape)} do not match the input of {length} "
                         f"positions (batch {batch})")
    if length == 0:
        raise ValueError("empty input: pass idx and/or embeddings")
    top = int(positions.max())
    if top >= backbone.block_size or int(positions.min()) < 0:
        raise ValueError(f"sequence position {top} is outside the backbone's block_size "
                         f"{backbone.block_size}: the sequence is longer than this transformer was built for")
    if attn_mask is not None:
        want = (batch, length, past + length)
        if attn_mask.dtype != torch.bool:
            raise TypeError(f"attn_mask must be bool (True = may attend), got {attn_mask.dtype}")
        if attn_mask.dim() != 3 or attn_mask.shape[0] not in (1, batch) or tuple(attn_mask.shape[1:]) != want[1:]:
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} does not match (B, S, S_keys) = {want}")
    return positions


def position_feature_rows(pos_features: torch.Tensor, positions: torch.Tensor, batch: int, width: int,
                          check: bool = True) -> torch.Tensor:
    """pos_features (B, P, C) at positions (B or 1, S) -> (B, S, C). `check=False` skips the
    position range check (a device sync): `decode`, whose sampler checked P once."""
    if pos_features.dim() != 3 or pos_features.shape[0] != batch or pos_features.shape[2] != width:
        raise ValueError(f"pos_features of shape {tuple(pos_features.shape)} must be (B={batch}, P, C={width})")
    if check and int(positions.max()) >= pos_features.shape[1]:
        raise ValueError(f"pos_features cover {pos_features.shape[1]} positions, position {int(positions.max())} "
                         "was asked for")
    index = positions.to(pos_features.device).expand(batch, -1)
    return pos_features.gather(1, index[:, :, None].expand(-1, -1, width))


class BackboneMixin:
    """What both backbones share: embedding the inputs with their checks, the blocks loop, head and
    loss. A backbone has `tok_emb`, `pos_emb` (1, block_size, n_embd), `drop`, `blocks` (each
    `block(x, attn_mask, cache, layer)`), `ln_f`, `head`, and the sizes as attributes."""

    def get_block_size(self) -> int:
        return self.block_size

    def new_cache(self, capacity: Optional[int] = None) -> KVCache:
        return KVCache(self.n_layer, capacity)

    def prepare_mask(self, attn_mask: Optional[torch.Tensor], past: int, length: int, device) -> Optional[torch.Tensor]:
        """The mask the blocks get; None means causal (the attention handles it)."""
        return attn_mask

    def output_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head: (B, S, n_embd) last-block features -> (B, S, vocab_size) logits."""
        return self.head(self.ln_f(x))

    def last_block_rows(self, block, x, attn_mask, cache, layer: int, rows: torch.Tensor) -> torch.Tensor:
        """The last block's output at `rows` (B, R) only. Generic: the whole block, then the rows."""
        x = block(x, attn_mask, cache, layer)
        return x.gather(1, rows[:, :, None].expand(-1, -1, x.shape[-1]))

    def forward(self, idx: Optional[torch.Tensor] = None, embeddings: Optional[torch.Tensor] = None,
                targets: Optional[torch.Tensor] = None, *, attn_mask: Optional[torch.Tensor] = None,
                positions: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None,
                out_rows: Optional[torch.Tensor] = None, pos_features: Optional[torch.Tensor] = None):
        """See the module docstring. out_rows (B, R) long: return logits (B, R, V) of these input
        positions only (a sampler's first pass needs a few rows; the last block and the head then
        skip the others' queries, feed-forward and vocabulary projection)."""
        parts = ([embeddings] if embeddings is not None else []) + ([self.tok_emb(idx)] if idx is not None else [])
        if not parts:
            raise ValueError(f"{type(self).__name__}.forward needs idx and/or embeddings")
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]                    # (B, S, C)
        if x.shape[-1] != self.n_embd:
            raise ValueError(f"embeddings have width {x.shape[-1]}, the transformer has n_embd {self.n_embd}")
        if cache is not None and cache.n_layer != self.n_layer:
            raise ValueError(f"the cache has {cache.n_layer} layers, the transformer {self.n_layer}")
        past = cache.length if cache is not None else 0                                 # before any append
        positions = check_backbone_inputs(self, x.shape[1], attn_mask, positions, cache, x.shape[0])
        attn_mask = self.prepare_mask(attn_mask, past, x.shape[1], x.device)
        x = x + self.pos_emb[0, positions.to(x.device)]
        if pos_features is not None:
            x = x + position_feature_rows(pos_features, positions, x.shape[0], self.n_embd).to(x.dtype)
        x = self.drop(x)
        if out_rows is not None:
            if targets is not None:
                raise ValueError("out_rows and targets cannot be combined")
            out_rows = out_rows.to(x.device)
            if out_rows.dim() != 2 or out_rows.shape[0] != x.shape[0] or out_rows.numel() == 0:
                raise ValueError(f"out_rows of shape {tuple(out_rows.shape)} must be (B={x.shape[0]}, R>0)")
            if int(out_rows.min()) < 0 or int(out_rows.max()) >= x.shape[1]:
                raise ValueError(f"out_rows must index the {x.shape[1]} input positions")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == last and out_rows is not None:
                x = self.last_block_rows(block, x, attn_mask, cache, i, out_rows)
            else:
                x = block(x, attn_mask, cache, i)
        logits = self.output_logits(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


class CausalSelfAttention(nn.Module):
    """minGPT's attention (separate key/query/value/proj Linear layers) on SDPA."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, attn_pdrop: float = 0.0,
                 resid_pdrop: float = 0.0, n_unmasked: int = 0):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} must be divisible by n_head {n_head}")
        self.key = nn.Linear(n_embd, n_embd)
        self.query = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(resid_pdrop)
        self.attn_pdrop = float(attn_pdrop)
        self.n_head, self.block_size, self.n_unmasked = n_head, block_size, int(n_unmasked)
        self._fused = None  # (key of the source tensors, weight, bias) for inference
        self._register_load_state_dict_pre_hook(self._consume_mingpt_mask)

    def _project_qkv(self, x: torch.Tensor):
        """query, key, value projections; without autograd as one matmul on a fused weight (a
        decoding step is dominated by per-call overhead), rebuilt whenever a source tensor changes."""
        layers = (self.query, self.key, self.value)
        if torch.is_grad_enabled():
            return tuple(layer(x) for layer in layers)
        tensors = [t for layer in layers for t in (layer.weight, layer.bias)]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if self._fused is None or self._fused[0] != key:
            self._fused = (key, torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers]))
        return F.linear(x, self._fused[1], self._fused[2]).chunk(3, dim=-1)

    def _consume_mingpt_mask(self, state_dict, prefix, *args):
        """minGPT checkpoints hold the causal mask as a buffer; accept it if it is that pattern."""
        key = prefix + "mask"
        if key not in state_dict:
            return
        mask = state_dict.pop(key)
        size = mask.shape[-1]
        n = int(mask.reshape(size, size)[0].sum()) if size else 0
        n_unmasked = n if n > 1 else 0
        if not torch.equal(mask.reshape(size, size).bool(), causal_mask(size, n_unmasked, mask.device)):
            raise ValueError(f"{key}: the checkpoint's attention mask is not minGPT's causal pattern; "
                             "this backbone cannot reproduce it")
        self.n_unmasked = n_unmasked

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None,
                layer: int = 0, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, C); attn_mask (B, T, T_keys) bool or None (causal) -> (B, T, C); with rows (B, R)
        long, keys/values of all T positions but queries (and output) at those rows only: (B, R, C)."""
        B, T, C = x.shape
        heads = lambda t: t.view(B, t.shape[1], self.n_head, C // self.n_head).transpose(1, 2)  # noqa: E731
        if rows is None:
            q, k, v = (heads(t) for t in self._project_qkv(x))                        # (B, H, T, D)
        else:
            k, v = heads(self.key(x)), heads(self.value(x))                           # (B, H, T, D)
            q = heads(self.query(x.gather(1, rows[:, :, None].expand(-1, -1, C))))    # (B, H, R, D)
        past = 0
        if cache is not None:
            past = cache.layer_length(layer)
            k, v = cache.append(layer, k, v)
        dropout = self.attn_pdrop if self.training else 0.0
        if attn_mask is None and past == 0 and self.n_unmasked == 0 and rows is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            if attn_mask is None:
                attn_mask = causal_mask(past + T, self.n_unmasked, x.device)[past:][None]
            if rows is not None:
                attn_mask = attn_mask.expand(B, -1, -1).gather(1, rows[:, :, None].expand(-1, -1, attn_mask.shape[2]))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask[:, None], dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, q.shape[2], C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, attn_pdrop: float, resid_pdrop: float,
                 n_unmasked: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, attn_pdrop, resid_pdrop, n_unmasked)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(resid_pdrop))

    def forward(self, x, attn_mask=None, cache=None, layer=0, rows=None):
        """x (B, T, C) -> (B, T, C), or (B, R, C) at `rows` (B, R) only (keys/values from all T)."""
        h = self.attn(self.ln1(x), attn_mask, cache, layer, rows)
        x = x + h if rows is None else x.gather(1, rows[:, :, None].expand(-1, -1, x.shape[-1])) + h
        return x + self.mlp(self.ln2(x))


HEADS = ("linear", "tied")


class TiedPredictionHead(nn.Module):
    """The released iLAT transformer's output head (their `GPTPrediction` + tied decoder):
    LayerNorm -> Linear(C, C) -> erf-GELU -> LayerNorm, then the projection onto the token
    embedding table (tied weights) plus a bias of its own.

    forward(x (B, S, C), embedding (V, C)) -> logits (B, S, V). Parameters `ln1`, `dense`, `ln2`, `bias`."""

    def __init__(self, n_embd: int, vocab_size: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.dense = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(F.gelu(self.dense(self.ln1(x))))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), embedding, self.bias)


class GPT(BackboneMixin, nn.Module):
    """minGPT with upstream's constructor (`taming.modules.transformer.mingpt.GPT`) and parameter names.

    forward(idx, embeddings=None, targets=None, *, attn_mask=None, positions=None, cache=None)
        -> (logits (B, S, vocab_size), cross-entropy loss if targets else None); see the module
    docstring for shapes. Upstream's `Net2NetTransformer.sample()` runs on it unchanged.

    `head` (str, defaults to "linear"): "linear" is minGPT's `ln_f` + `head` (Linear, no bias);
    "tied" is the released iLAT transformer's head (`TiedPredictionHead`, parameters
    `head_tied.*`): an MLP transform and logits = features @ tok_emb^T + bias, in `forward` and
    in the decoding step alike.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 12, n_head: int = 8, n_embd: int = 256,
                 embd_pdrop: float = 0.0, resid_pdrop: float = 0.0, attn_pdrop: float = 0.0, n_unmasked: int = 0,
                 head: str = "linear"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head_kind = head
        self.vocab_size, self.block_size = int(vocab_size), int(block_size)
        self.n_layer, self.n_head, self.n_embd = int(n_layer), int(n_head), int(n_embd)
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, n_embd))
        self.drop = nn.Dropout(embd_pdrop)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, attn_pdrop, resid_pdrop, n_unmasked)
                                      for _ in range(n_layer)])
        if head == "tied":
            self.head_tied = TiedPredictionHead(n_embd, vocab_size)
        else:
            self.ln_f = nn.LayerNorm(n_embd)
            self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init_weights)
        # upstream code reads `transformer.config.vocab_size` (Net2NetTransformer's pkeep corruption)
        self.config = SimpleNamespace(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                                      n_head=self.n_head, n_embd=self.n_embd, n_unmasked=int(n_unmasked))

    def last_block_rows(self, block, x, attn_mask, cache, layer, rows):
        return block(x, attn_mask, cache, layer, rows)

    def output_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "tied":
            return self.head_tied(x, self.tok_emb.weight)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def decode(self, idx: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor, cache: KVCache,
               pos_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One decoding call of a sampler, the same computation as `forward(idx, attn_mask=...,
        positions=..., cache=..., pos_features=...)` in eval mode, in plain functional ops: a
        decoding step reads every weight for a few positions, so module dispatch would be a large
        share of its time.

        idx (B, T) long, positions (B, T) long, attn_mask (B, T, cache.length + T) bool
        -> logits (B, T, vocab_size); the new keys/values are appended to `cache`."""
        if self.training:
            raise RuntimeError("decode is for inference; call model.eval() first")
        B, T = idx.shape
        C, H = self.n_embd, self.n_head
        weights = self._decode_weights()
        x = F.embedding(idx, self.tok_emb.weight) + self.pos_emb[0, positions]          # (B, T, C)
        if pos_features is not None:
            x = x + position_feature_rows(pos_features, positions, B, C, check=False).to(x.dtype)
        # one additive mask for all layers (SDPA would convert a boolean one in every layer)
        bias = torch.zeros(attn_mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill_(~attn_mask, float("-inf"))[:, None]                    # (B, 1, T, N)
        linear = lambda h, w, b: torch.addmm(b, h.reshape(-1, h.shape[-1]), w).view(B, T, -1)  # noqa: E731
        for layer, (block, (qkv_w, qkv_b, proj_w, fc1_w, fc2_w)) in enumerate(zip(self.blocks, weights[:-1])):
            ln1, ln2 = block.ln1, block.ln2
            h = F.layer_norm(x, (C,), ln1.weight, ln1.bias, ln1.eps)
            q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in linear(h, qkv_w, qkv_b).chunk(3, -1))
            k, v = cache.append(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                  # (B, H, T, D)
            x = x + linear(y.transpose(1, 2).reshape(B, T, C), proj_w, block.attn.proj.bias)
            h = F.layer_norm(x, (C,), ln2.weight, ln2.bias, ln2.eps)
            x = x + linear(F.gelu(linear(h, fc1_w, block.mlp[0].bias)), fc2_w, block.mlp[2].bias)
        if self.head_kind == "tied":
            h = self.head_tied.transform(x)
            return torch.addmm(self.head_tied.bias, h.reshape(B * T, C), weights[-1]).view(B, T, -1)
        h = F.layer_norm(x, (C,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return (h.reshape(B * T, C) @ weights[-1]).view(B, T, -1)

    def _decode_weights(self):
        """Per block (fused qkv (C, 3C), qkv bias, proj (C, C), fc1 (C, 4C), fc2 (4C, C)), then the
        head (C, V): transposed, contiguous copies (a one-row product with a (in, out) matrix streams
        its memory about twice as fast on CPU as F.linear's (out, in) layout), rebuilt whenever a
        source tensor changes."""
        head_weight = self.tok_emb.weight if self.head_kind == "tied" else self.head.weight
        sources = [head_weight]
        for block in self.blocks:
            a = block.attn
            sources += [a.query.weight, a.key.weight, a.value.weight, a.query.bias, a.key.bias, a.value.bias,
                        a.proj.weight, block.mlp[0].weight, block.mlp[2].weight]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if getattr(self, "_decode_cache", None) is None or self._decode_cache[0] != key:
            weights = []
            for block in self.blocks:
                a = block.attn
                qkv = torch.cat([a.query.weight, a.key.weight, a.value.weight]).t().contiguous()
                weights.append((qkv, torch.cat([a.query.bias, a.key.bias, a.value.bias]),
                                a.proj.weight.t().contiguous(), block.mlp[0].weight.t().contiguous(),
                                block.mlp[2].weight.t().contiguous()))
            weights.append(head_weight.t().contiguous())
            self._decode_cache = (key, weights)
        return self._decode_cache[1]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
