"""Sampling speed: iLAT's cached local sampling against full AR, uncached local sampling and one forward.

On the same transformer weights and a paper-shaped sequence (16x16 condition tokens + 16x16 grid
tokens, vocabulary 2048; paper Table 2, sec. 4.3), for several mask rates:

  (a) upstream `Net2NetTransformer.sample`: taming's minGPT generating all 256 tokens (full AR,
      no cache; the "Taming" column of Table 2), and the same loop on our SDPA backbone (a');
  (b) masked-only sampling without a cache: one full forward per generated token (the
      authors' release);
  (c) ours, `ilat_ext.modules.sampling.sample_tokens` with the KV cache;
  (d) one forward pass of the whole sequence with the LA mask (the floor for any method that
      must read every position once).

The sequence uses taming's layout (condition tokens, then grid tokens; 511 positions) so that (a)
runs upstream's own code on the same weights; iLAT's start layout adds two positions. Greedy
decoding (the paper's default); (b) and (c) are checked to produce identical tokens. Also
measured: a batch of 8 different edits (different masks) in one call against 8 calls one at a
time. Width and depth are reduced for CPU by default and settable.

    ilat-benchmark-sampling                   # CPU default: 8 layers, width 256
    ilat-benchmark-sampling --quick           # < 1 minute
    ilat-benchmark-sampling --device cuda --n_layer 12 --n_head 12 --n_embd 768

Prints a table (median of --repeats runs) and, as its last line, one JSON object with
`speedup_vs_taming_sample`, `speedup_vs_uncached`, `ratio_to_one_forward` (at the ~6.6% mask) and
`batch8_throughput_gain`.
"""
import argparse
import json
import math
import statistics
import time
from types import SimpleNamespace

import torch

import ilat_ext  # noqa: F401  (makes taming.models importable)
from ilat_ext.cli import ArgumentParser
from ilat_ext.masks import la_attention_mask, la_causal_positions
from ilat_ext.modules.gpt import GPT
from ilat_ext.modules.sampling import sample_tokens


def rate_mask(grid: int, rate: float, offset: int = 0) -> torch.Tensor:
    """(grid * grid,) bool: round(rate * grid^2) tokens filling a near-square box in raster order;
    centred for offset 0, elsewhere for other offsets (different edits for the batch test)."""
    n = min(grid * grid, max(1, round(rate * grid * grid)))
    width = math.ceil(math.sqrt(n))
    rows = math.ceil(n / width)
    if offset == 0:
        top, left = (grid - rows) // 2, (grid - width) // 2
    else:
        top, left = (2 * offset) % (grid - rows + 1), (5 * offset) % (grid - width + 1)
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    for i in range(n):
        mask[top + i // width, left + i % width] = True
    return mask.flatten()


def timed(fn, repeats: int, device: torch.device):
    """Median wall time of `fn()` over `repeats` runs (after one warm-up run), and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-benchmark-sampling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_layer", type=int, default=8)
    parser.add_argument("--n_head", type=int, default=8)
    parser.add_argument("--n_embd", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--grid", type=int, default=16, help="latent grid side (condition and target)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.066, 0.30, 1.0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median)")
    parser.add_argument("--repeats_full", type=int, default=3, help="timed runs of the slow full-AR sampler (a)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="4 layers, width 128, masks 6.6%% and 30%%, 2 repeats: about a minute on a 2-core CPU")
    return parser


def run(argv=None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.n_layer, args.n_head, args.n_embd = 4, 4, 128
        args.repeats, args.repeats_full, args.rates = 2, 1, args.rates[:2]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    L = args.grid * args.grid
    n_cond = L
    block = n_cond + L
    ours = GPT(args.vocab, block, args.n_layer, args.n_head, args.n_embd).to(device).eval()
    from taming.modules.transformer.mingpt import GPT as UpstreamGPT
    from taming.models.cond_transformer import Net2NetTransformer
    upstream = UpstreamGPT(args.vocab, block, args.n_layer, args.n_head, args.n_embd).to(device).eval()
    missing, unexpected = upstream.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("attn.mask") for k in missing), (missing, unexpected)
    holder = SimpleNamespace(transformer=upstream, pkeep=1.0)  # what upstream's sample() reads from self

    c = torch.randint(0, args.vocab, (1, n_cond), device=device)
    z = torch.randint(0, args.vocab, (1, L), device=device)

    def run_local(mask, use_cache, batch_c=c, batch_z=z):
        m = mask.to(device)
        allowed = la_attention_mask(m, n_cond, "taming")
        sequential = la_causal_positions(m, n_cond, "taming")
        return sample_tokens(ours, batch_z, m, allowed, sequential, prefix=batch_c, use_cache=use_cache)

    def one_forward(mask, batch_c=c, batch_z=z):
        allowed = la_attention_mask(mask.to(device), n_cond, "taming")
        with torch.no_grad():
            return ours(torch.cat([batch_c, batch_z[:, :-1]], 1), attn_mask=allowed)[0]

    print(f"device {device} ({torch.get_num_threads()} threads), transformer {args.n_layer} layers x {args.n_head} "
          f"heads x width {args.n_embd}, vocab {args.vocab}, sequence {n_cond} condition + {L} grid tokens, "
          f"greedy, median of {args.repeats} (full AR: {args.repeats_full})", flush=True)
    t_full, _ = timed(lambda: Net2NetTransformer.sample(holder, z[:, :0], c, steps=L, sample=False),
                      args.repeats_full, device)
    holder_ours = SimpleNamespace(transformer=ours, pkeep=1.0)
    t_full_ours, _ = timed(lambda: Net2NetTransformer.sample(holder_ours, z[:, :0], c, steps=L, sample=False),
                           args.repeats_full, device)
    print(f"(a) upstream Net2NetTransformer.sample, all {L} tokens: {t_full * 1e3:.0f} ms "
          f"(same loop on our SDPA backbone (a'): {t_full_ours * 1e3:.0f} ms)", flush=True)

    rows = []
    header = ("| mask | tokens | (a) full AR ms | (b) no cache ms | (c) cached ms | (d) 1 forward ms | "
              "(a)/(c) | (b)/(c) | (c)/(d) | calls (b) / (c) |")
    for rate in args.rates:
        mask = rate_mask(args.grid, rate)[None]
        t_nc, r_nc = timed(lambda: run_local(mask, False), args.repeats, device)
        t_c, r_c = timed(lambda: run_local(mask, True), args.repeats, device)
        t_f, _ = timed(lambda: one_forward(mask), args.repeats, device)
        if not torch.equal(r_nc.indices, r_c.indices):
            raise SystemExit("cached and uncached sampling disagree: this is a bug")
        rows.append(dict(rate=float(mask.float().mean()), tokens=int(mask.sum()), full_ms=t_full * 1e3,
                         uncached_ms=t_nc * 1e3, cached_ms=t_c * 1e3, forward_ms=t_f * 1e3,
                         speedup_vs_taming_sample=t_full / t_c, speedup_vs_uncached=t_nc / t_c,
                         ratio_to_one_forward=t_c / t_f, calls_uncached=r_nc.steps, calls_cached=r_c.steps))
        print(f"  mask {rows[-1]['rate']:.1%}: done", flush=True)

    # A batch of 8 different edits (masks around 6.6% at different places) vs 8 calls one at a time.
    masks8 = torch.stack([rate_mask(args.grid, args.rates[0], offset=i) for i in range(8)])
    c8, z8 = c.expand(8, -1).contiguous(), z.expand(8, -1).contiguous()
    t_batch, r_batch = timed(lambda: run_local(masks8, True, c8, z8), args.repeats, device)
    t_single, singles = timed(lambda: [run_local(masks8[i:i + 1], True) for i in range(8)], args.repeats, device)
    t_forward8, _ = timed(lambda: one_forward(masks8, c8, z8), args.repeats, device)
    if not torch.equal(r_batch.indices, torch.cat([s.indices for s in singles])):
        raise SystemExit("batched and one-at-a-time sampling disagree: this is a bug")
    gain = t_single / t_batch

    print()
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        print(f"| {r['rate']:.1%} | {r['tokens']} | {r['full_ms']:.0f} | {r['uncached_ms']:.0f} | {r['cached_ms']:.1f} | "
              f"{r['forward_ms']:.1f} | {r['speedup_vs_taming_sample']:.0f}x | {r['speedup_vs_uncached']:.1f}x | "
              f"{r['ratio_to_one_forward']:.2f} | {r['calls_uncached']} / {r['calls_cached']} |")
    print(f"\nbatch of 8 different edits ({args.rates[0]:.1%} masks): {t_batch * 1e3:.1f} ms in one call vs "
          f"{t_single * 1e3:.1f} ms one at a time: throughput x{gain:.2f}; one forward of the batch "
          f"{t_forward8 * 1e3:.1f} ms, so the batched edit costs {t_batch / t_forward8:.2f} forward passes")
    first = rows[0]
    summary = dict(device=str(device), threads=torch.get_num_threads(), n_layer=args.n_layer, n_head=args.n_head,
                   n_embd=args.n_embd, vocab=args.vocab, grid=args.grid, mask_rate=round(first["rate"], 4),
                   taming_sample_ms=round(t_full * 1e3, 2), taming_sample_sdpa_ms=round(t_full_ours * 1e3, 2),
                   speedup_vs_taming_sample=round(first["speedup_vs_taming_sample"], 2),
                   speedup_vs_uncached=round(first["speedup_vs_uncached"], 2),
                   ratio_to_one_forward=round(first["ratio_to_one_forward"], 3),
                   batch8_throughput_gain=round(gain, 3), batch8_ratio_to_one_forward=round(t_batch / t_forward8, 3),
                   rows=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    print(json.dumps(summary))
    return summary


def main(argv=None) -> int:
    run(argv)
    return 0
