"""Local autoregressive sampling over a transformer backbone (iLAT, paper Sec. 3.2, Fig. 2).

Generates only the tokens to edit, in raster order, for a batch whose masks differ per element.
The sequence is [embeddings (E), prefix tokens (P), grid tokens z_0 .. z_{L-2}]: position
n_pre + i (n_pre = E + P) holds grid token i and position n_pre + i - 1 predicts it. This covers
both layouts of `ilat_ext.masks.la_attention_mask`: iLAT's "start" layout passes the condition
and the start token z_s as embeddings; taming's layout passes the condition tokens as prefix.

Two ways, with identical results for greedy decoding (tested; random draws consume the
generator in a different order):
- `use_cache=False`, the authors' release's method: one full forward pass per generated token.
- `use_cache=True`: one full forward pass fills a KV cache and gives every row that does not
  depend on generated tokens; then the "sequential" positions (the LA mask's causal group) are
  computed in order, a few at a time (one call per generated token), attending to the cache. The attention mask is the one used in
  training, so what is computed is exactly the teacher-forced forward pass on the same tokens.
  Rows of the first pass that read a not-yet-generated token are stale; their cache slots are
  masked out and the position is recomputed as a new slot.

The sampler checks the attention mask has the structure that makes this exact: positions holding
tokens to generate are sequential, other rows never attend to sequential columns, and sequential
rows attend to sequential columns at or before themselves only. The LA mask and the plain causal
mask (Taming's edit, with every position from the first generated token on sequential) have it.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm.auto import tqdm


@dataclass
class SampleResult:
    """indices (B, L) long: the grid tokens, generated ones filled in; steps: transformer calls made;
    logits (B, L, V) float or None: the logits each generated token was drawn from (NaN elsewhere)."""
    indices: torch.Tensor
    steps: int
    logits: Optional[torch.Tensor] = None


def pick_tokens(logits: torch.Tensor, greedy: bool = True, temperature: float = 1.0, top_k: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits (N, V) -> tokens (N,): argmax, or a draw from softmax(logits / temperature) over the top k."""
    if greedy:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    logits = logits.float() / temperature
    if top_k is not None:
        k = min(int(top_k), logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def check_sampling_mask(allowed: torch.Tensor, sequential: torch.Tensor, gen_mask: torch.Tensor, n_pre: int,
                        input_last: bool = False) -> None:
    """Raises ValueError unless `allowed` lets the cached sampler reproduce the full forward pass."""
    B, S, _ = allowed.shape
    L = gen_mask.shape[1]
    if n_pre < 1:
        raise ValueError("the first grid token needs a position that predicts it: pass at least one "
                         "embedding or prefix token (a condition or a start token)")
    if tuple(sequential.shape) != (B, S) or allowed.shape[2] != S:
        raise ValueError(f"attention mask {tuple(allowed.shape)} and sequential {tuple(sequential.shape)} "
                         f"must be (B, S, S) and (B, S)")
    if S != n_pre + L - (0 if input_last else 1):
        raise ValueError(f"sequence of {S} positions does not match {n_pre} leading positions + {L} grid tokens"
                         + ("" if input_last else " - 1"))
    held = torch.zeros(B, S, dtype=torch.bool, device=gen_mask.device)
    held[:, n_pre:] = gen_mask[:, :S - n_pre]
    if (held & ~sequential).any():
        raise ValueError("a position holding a token to generate is not in the sequential group")
    seq_row, seq_col = sequential[:, :, None], sequential[:, None, :]
    if (allowed & ~seq_row & seq_col).any():
        raise ValueError("a non-sequential row attends to a sequential column: it would see generated tokens")
    upper = torch.ones(S, S, dtype=torch.bool, device=allowed.device).triu(1)
    if (allowed & seq_row & seq_col & upper).any():
        raise ValueError("a sequential row attends to a later sequential column: raster-order sampling cannot "
                         "reproduce it")


@torch.no_grad()
def sample_tokens(backbone, z: torch.Tensor, gen_mask: torch.Tensor, allowed: torch.Tensor,
                  sequential: torch.Tensor, embeddings: Optional[torch.Tensor] = None,
                  prefix: Optional[torch.Tensor] = None, *, greedy: bool = True, temperature: float = 1.0,
                  top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
                  vocab_limit: Optional[int] = None, use_cache: bool = True, progress: bool = False,
                  record_logits: bool = False, pos_features: Optional[torch.Tensor] = None,
                  input_last: bool = False) -> SampleResult:
    """Fill in the grid tokens where `gen_mask` is True, in raster order.

    backbone: an `ilat_ext.modules.gpt.GPT`-interface transformer (GPT or XTransformer).
    z: (B, L) long grid tokens; those under gen_mask are never read.
    gen_mask: (B, L) bool, tokens to generate (may differ per element, may be empty).
    allowed: (B, S, S) bool attention mask; sequential: (B, S) bool, the positions to compute in
        order (the LA mask's causal group, `ilat_ext.masks.la_causal_positions`).
    embeddings: (B, E, C) leading features; prefix: (B, P) leading tokens; S = E + P + L - 1, or
        S = E + P + L with `input_last` (every grid token an input, the release's 514-position
        sequence: the last position holds z_{L-1} and predicts nothing).
    vocab_limit: draw only from the first `vocab_limit` logits (a vocabulary with extra tokens).
    pos_features: (B, >= S, C) per-position input features (the backbone's `pos_features`), given to
        every call, so cached decoding adds at each position what the training forward added.
    Returns a `SampleResult`. No transformer call when nothing is to be generated.
    """
    if z.dim() != 2 or gen_mask.shape != z.shape:
        raise ValueError(f"z {tuple(z.shape)} and gen_mask {tuple(gen_mask.shape)} must both be (B, L)")
    B, L = z.shape
    n_pre = (0 if embeddings is None else embeddings.shape[1]) + (0 if prefix is None else prefix.shape[1])
    gen_mask = gen_mask.bool().to(z.device)
    z = z.masked_fill(gen_mask, 0)  # what is generated is never read before it exists
    logits_out = None
    if record_logits:
        logits_out = torch.full((B, L, int(vocab_limit or backbone.vocab_size)), float("nan"), device=z.device,
                                dtype=next(backbone.parameters()).dtype)
    if not gen_mask.any():
        return SampleResult(z, 0, logits_out)
    check_sampling_mask(allowed, sequential, gen_mask, n_pre, input_last)
    n_in = allowed.shape[1] - n_pre  # grid tokens that are inputs: L - 1, or L
    if pos_features is not None and (pos_features.dim() != 3 or pos_features.shape[:2] != (B, allowed.shape[1])):
        raise ValueError(f"pos_features of shape {tuple(pos_features.shape)} must be (B={B}, S={allowed.shape[1]}, C)")
    rows = torch.arange(B, device=z.device)

    def forward(tokens, **kwargs):
        idx = tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
        logits = backbone(idx, embeddings, pos_features=pos_features, **kwargs)[0]
        return logits[..., :vocab_limit] if vocab_limit else logits

    def take(b_mask, token_index, logits):  # write draws for elements b_mask at grid indices (B,)
        tokens = pick_tokens(logits, greedy, temperature, top_k, generator)
        j = token_index.clamp(0, L - 1)
        z[rows, j] = torch.where(b_mask, tokens, z[rows, j])
        if logits_out is not None:
            logits_out[rows[b_mask], j[b_mask]] = logits[b_mask].to(logits_out.dtype)

    if not use_cache:
        # The release's method: k-th generated token of every element from its own full forward pass.
        order = torch.sort(torch.where(gen_mask, torch.arange(L, device=z.device), L), dim=1).values  # (B, L)
        count = gen_mask.sum(1)
        steps = int(count.max())
        for k in tqdm(range(steps), desc="sampling (no cache)", disable=not progress, leave=False):
            j = order[:, k]
            active = k < count
            logits = forward(z[:, :n_in], attn_mask=allowed)                     # (B, S, V)
            take(active, j, logits[rows, (n_pre - 1 + j).clamp(max=logits.shape[1] - 1)])
        return SampleResult(z, steps, logits_out)

    S = allowed.shape[1]
    pos = torch.arange(S, device=z.device)
    held = torch.zeros(B, S, dtype=torch.bool, device=z.device)
    held[:, n_pre:] = gen_mask[:, :n_in]
    exact = ~sequential | (held.cumsum(1) == 0)   # first-pass rows that read known inputs only
    predicts = torch.zeros(B, S, dtype=torch.bool, device=z.device)
    predicts[:, n_pre - 1:n_pre - 1 + L] = gen_mask                # position n_pre - 1 + j predicts token j

    # The plan, all known before the first call. Element b's sequential positions are computed in
    # order as new cache slots, except those the first pass already got exactly; a position is
    # worth computing only if it predicts a generated token or a later sequential position attends
    # to it. Positions whose inputs are known go into one call: a call ends at the first position
    # that predicts a generated token (the next position holds that token), so a run boundary
    # (the last holder of one run + the first predictor of the next) costs one call, not two.
    count = sequential.sum(1)                                                      # (B,)
    order = torch.sort(torch.where(sequential, pos, S), dim=1).values              # (B, S), padded with S
    kk = torch.arange(S, device=z.device)[None]
    p_all = order.clamp(max=S - 1)
    useful = (kk < count[:, None]) & (predicts.gather(1, p_all) | (kk < count[:, None] - 1))
    compute = useful & ~exact.gather(1, p_all)                                     # (B, S)
    takes = compute & predicts.gather(1, p_all)
    # Call index of every computed position (the number of takes before it) and its rank in the call.
    call_of = torch.where(compute, torch.cumsum(takes.long(), dim=1) - takes.long(), S)     # (B, S); S = none
    n_calls = int(call_of[compute].max()) + 1 if compute.any() else 0
    ordinal = torch.cumsum(compute.long(), dim=1) - 1                              # among computed positions
    first = torch.full((B, S + 1), S, dtype=torch.long, device=z.device)
    first = first.scatter_reduce(1, call_of, ordinal, "amin", include_self=True)   # first ordinal of each call
    rank = ordinal - first.gather(1, call_of)                                      # (B, S)
    width = int(rank[compute].max()) + 1 if compute.any() else 1
    b_idx, k_idx = compute.nonzero(as_tuple=True)
    flat = call_of[b_idx, k_idx] * width + rank[b_idx, k_idx]                      # query slot of each one
    q_pos = torch.zeros(B, n_calls * width, dtype=torch.long, device=z.device)
    q_ok = torch.zeros(B, n_calls * width, dtype=torch.bool, device=z.device)
    q_take = torch.zeros(B, n_calls * width, dtype=torch.bool, device=z.device)
    q_pos[b_idx, flat] = p_all[b_idx, k_idx]
    q_ok[b_idx, flat] = True
    q_take[b_idx, flat] = takes[b_idx, k_idx]
    slot_pos = torch.cat([pos.expand(B, S), q_pos], dim=1)                         # (B, N)
    slot_ok = torch.cat([exact, q_ok], dim=1)                                      # (B, N)
    # The LA rows of every query over every slot; a query cannot see later calls' slots because
    # those hold later causal positions. Padding queries see their own slot only.
    row_masks = allowed[rows[:, None, None], q_pos[:, :, None], slot_pos[:, None, :]]
    row_masks &= slot_ok[:, None, :] & q_ok[:, :, None]                             # (B, Q, N)
    pad_b, pad_q = (~q_ok).nonzero(as_tuple=True)
    row_masks[pad_b, pad_q, S + pad_q] = True
    held_idx = (q_pos - n_pre).clamp(min=0)                                        # grid token each query holds
    take_at = q_take.view(B, n_calls, width).float().argmax(2)                     # (B, n_calls)
    take_any = q_take.view(B, n_calls, width).any(2)                               # (B, n_calls)

    # Everything predicted by a row that reads known tokens only comes from the first pass: tokens
    # predicted by non-sequential rows, and by leading sequential rows. The first pass fills the
    # cache with every position and computes logits at those rows only.
    direct = gen_mask & exact[:, n_pre - 1:n_pre - 1 + L]                          # (B, L)
    n_direct = direct.sum(1)                                                       # (B,)
    grid = torch.arange(L, device=z.device)
    direct_j = torch.sort(torch.where(direct, grid, L), dim=1).values[:, :max(1, int(n_direct.max()))]
    direct_ok = direct_j < L                                                       # (B, R)
    direct_j = direct_j.clamp(max=L - 1)
    cache = backbone.new_cache(capacity=slot_pos.shape[1])
    first = forward(z[:, :n_in], attn_mask=allowed, cache=cache, out_rows=n_pre - 1 + direct_j)  # (B, R, V)
    if direct_ok.any():
        b_idx, r_idx = direct_ok.nonzero(as_tuple=True)
        logits = first[b_idx, r_idx]
        j_idx = direct_j[b_idx, r_idx]
        z[b_idx, j_idx] = pick_tokens(logits, greedy, temperature, top_k, generator)
        if logits_out is not None:
            logits_out[b_idx, j_idx] = logits.to(logits_out.dtype)
    decode = getattr(backbone, "decode", None)
    if decode is None:  # any backbone with the interface: a forward call on the cache
        def decode(idx, positions, attn_mask, cache, pos_features=None):
            return backbone(idx, None, attn_mask=attn_mask, positions=positions, cache=cache,
                            pos_features=pos_features)[0]
    for r in tqdm(range(n_calls), desc="sampling", disable=not progress, leave=False):
        lo, hi = r * width, (r + 1) * width
        token = z.gather(1, held_idx[:, lo:hi])                                     # (B, T)
        out = decode(token, q_pos[:, lo:hi], row_masks[:, lo:hi, :S + hi], cache, pos_features)  # (B, T, V)
        t = take_at[:, r]
        logits = out[rows, t]
        logits = logits[..., :vocab_limit] if vocab_limit else logits
        take(take_any[:, r], q_pos[rows, lo + t] - n_pre + 1, logits)
    return SampleResult(z, 1 + n_calls, logits_out)


@torch.no_grad()
def sample_tokens_release(backbone, z: torch.Tensor, gen_mask: torch.Tensor, embeddings: torch.Tensor, n_cond: int,
                          *, greedy: bool = True, temperature: float = 1.0, top_k: Optional[int] = None,
                          generator: Optional[torch.Generator] = None, vocab_limit: Optional[int] = None,
                          progress: bool = False) -> SampleResult:
    """The authors' released sampler (their `GETransformer.sample`), batched.

    For each token to generate, in raster order: rebuild their attention mask
    (`ilat_ext.masks.release_attention_mask`) with every generated token marked known, run the
    full sequence once (no cache), take the logits of the row that predicts the token. Elements
    of a batch follow their own masks (step k generates each element's k-th token); an element
    gets the tokens it would get alone (the maths of each row is per element).

    backbone: a GPT-interface transformer; z: (B, L) long grid tokens (those under gen_mask are
    the encoder's, visible only to rows the release lets see unknown tokens; they never reach the
    logits read); gen_mask: (B, L) bool; embeddings: (B, n_cond + 1, C), [condition, z_s];
    the sequence is [embeddings, z_0 .. z_{L-1}] (every grid token an input).
    Returns a `SampleResult` (steps = full passes made).
    """
    from ilat_ext.masks import release_attention_mask

    if z.dim() != 2 or gen_mask.shape != z.shape:
        raise ValueError(f"z {tuple(z.shape)} and gen_mask {tuple(gen_mask.shape)} must both be (B, L)")
    if embeddings.dim() != 3 or embeddings.shape[0] != z.shape[0] or embeddings.shape[1] != int(n_cond) + 1:
        raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} must be (B={z.shape[0]}, n_cond + 1 = "
                         f"{int(n_cond) + 1}, C): the condition positions and z_s")
    B, L = z.shape
    z = z.clone()
    remaining = gen_mask.bool().to(z.device).clone()
    rows = torch.arange(B, device=z.device)
    order = torch.sort(torch.where(remaining, torch.arange(L, device=z.device), L), dim=1).values   # (B, L)
    count = remaining.sum(1)
    steps = int(count.max()) if count.numel() else 0
    for k in tqdm(range(steps), desc="sampling (release)", disable=not progress, leave=False):
        j = order[:, k].clamp(max=L - 1)                                                    # (B,)
        active = k < count
        allowed = release_attention_mask(remaining, n_cond)                                 # (B, S, S)
        logits = backbone(z, embeddings, attn_mask=allowed)[0]                              # (B, S, V)
        logits = logits[rows, int(n_cond) + j]                                              # row n_cond + j predicts z_j
        logits = logits[..., :vocab_limit] if vocab_limit else logits
        tokens = pick_tokens(logits, greedy, temperature, top_k, generator)
        z[rows, j] = torch.where(active, tokens, z[rows, j])
        remaining[rows, j] = remaining[rows, j] & ~active
    return SampleResult(z, steps, None)
