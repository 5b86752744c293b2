"""Time and memory of the two-stream encoder (TSEncoder) against the plain taming Encoder.

Both encoders hold the same weights and run in the same process, interleaved (plain, TS, plain,
TS, ...) so that a busy machine slows both alike. For each mask rate (free-form brush masks from
`ilat_ext.data.mask_shapes.free_form_mask`; 0% = an all-zero mask) it reports the median forward time
of each encoder (torch.no_grad) and their ratio, and the peak memory of one forward.

Peak memory: on CUDA, torch.cuda.max_memory_allocated during one forward minus what was allocated
before it. On CPU, the largest set of tensor bytes alive at once during one forward (inputs and
weights excluded), from the allocation and free events of torch.profiler (profile_memory=True):
it is what the forward itself needs, not the process's RSS (which also holds the interpreter,
libraries, allocator caches and the other encoder).

    ilat-benchmark-encoder                       # ImageNet f16, CPU, 256 px
    ilat-benchmark-encoder --config face --batch 2
    ilat-benchmark-encoder --device cuda --repeats 20 --warmup 5

On a shared CPU, --threads 1 gives steadier figures: with several threads every parallel region
waits for all of them, and a core busy with another process stalls it; TSEncoder runs more (and
smaller) operations than the plain Encoder, so it suffers more from that than from its extra work.

The last line of output is one JSON object (`ts_over_plain_time_10pct`, `ts_over_plain_mem_10pct`,
and the same for the other rates, plus the raw figures).
"""
import os

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler (peak memory) quiet

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from ilat_ext.cli import ArgumentParser
from ilat_ext.data.mask_shapes import free_form_mask
from ilat_ext.modules.encoder import TSEncoder, apply_preset

CONFIGS: Dict[str, dict] = {
    # The public ImageNet VQGAN f16 (FACTS.md Sec. 2).
    "imagenet": dict(ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], z_channels=256,
                     norm_type="group", mid_attn=True),
    # The iLAT face TS-VQGAN (FACTS.md Sec. 1): InstanceNorm, no attention anywhere.
    "face": dict(ch=64, ch_mult=[1, 2, 4, 6, 8], num_res_blocks=2, attn_resolutions=[], z_channels=256,
                 norm_type="instance", mid_attn=False),
    # configs/toy/vqgan.yaml.
    "toy": dict(ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[16], z_channels=64,
                norm_type="group", mid_attn=True),
}


def build_pair(config: str, size: int, seed: int):
    """(plain, ts): an upstream taming Encoder and a TSEncoder with the same weights."""
    from taming.modules.diffusionmodules.model import Encoder

    params = dict(CONFIGS[config])
    norm_type, mid_attn = params.pop("norm_type"), params.pop("mid_attn")
    ddconfig = dict(params, double_z=False, resolution=size, in_channels=3, out_ch=3, dropout=0.0)
    torch.manual_seed(seed)
    ts = TSEncoder(**ddconfig, norm_type=norm_type, mid_attn=mid_attn)
    plain = apply_preset(Encoder(**ddconfig), norm_type, mid_attn)  # upstream's Encoder, same preset
    plain.load_state_dict(ts.state_dict(), strict=True)
    return plain.eval(), ts.eval()


def make_masks(batch: int, size: int, rate: float, rng: np.random.Generator) -> torch.Tensor:
    if rate <= 0:
        return torch.zeros(batch, 1, size, size)
    low, high = max(rate * 0.8, 1e-3), min(rate * 1.2, 1.0)
    masks = [free_form_mask(size, size, rng, area_range=(low, high), max_strokes=40) for _ in range(batch)]
    return torch.from_numpy(np.stack(masks))[:, None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(fn, device: torch.device) -> Optional[int]:
    """Bytes: the most memory alive at once during fn(), above what was allocated before it."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:  # the allocation (+) and free (-) events, in time order
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
                  and e.device_type() == torch.autograd.DeviceType.CPU]
    except AttributeError:
        return None
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ilat-benchmark-encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="imagenet")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.3],
                        help="mask areas (fractions); each mask's area is within +-20%% of it")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per encoder and rate "
                        "(default 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1 on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); 1 is steadier on a shared machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory measurement")
    return parser


def run(argv: Optional[List[str]] = None) -> dict:
    parser = get_parser()
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (20 if device.type == "cuda" else 3)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)

    plain, ts = build_pair(args.config, args.size, args.seed)
    plain, ts = plain.to(device), ts.to(device)
    rng = np.random.default_rng(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed)).to(device)

    masks = [make_masks(args.batch, args.size, rate, rng).to(device) for rate in args.rates]
    rows = []
    steps = warmup + len(args.rates) * repeats
    with torch.no_grad(), tqdm(total=steps, desc=f"{args.config} {args.size}px b{args.batch}", file=sys.stderr) as bar:
        for _ in range(warmup):  # allocator, oneDNN primitives, cuDNN autotuning; every mask's path once
            plain(x)
            for mask in masks:
                ts(x, mask)
            bar.update(1)
        for rate, mask in zip(args.rates, masks):
            times = {"plain": [], "ts": []}
            for _ in range(repeats):  # interleaved, so that a busy machine slows both alike
                for name, run in (("plain", lambda: plain(x)), ("ts", lambda: ts(x, mask))):
                    sync(device)
                    start = time.perf_counter()
                    run()
                    sync(device)
                    times[name].append(time.perf_counter() - start)
                bar.update(1)
            rows.append({"rate": rate, "mask_area": float(mask.mean()),
                         "plain_ms": 1e3 * statistics.median(times["plain"]),
                         "ts_ms": 1e3 * statistics.median(times["ts"])})
        if not args.no_memory:  # after all timings: a profiled run leaves the process slower for a while
            plain_mem = peak_memory(lambda: plain(x), device)  # mask-independent
            for row, mask in zip(rows, masks):
                row["plain_mem"], row["ts_mem"] = plain_mem, peak_memory(lambda: ts(x, mask), device)

    def ratio(a, b):
        return None if a is None or b in (None, 0) else a / b

    header = f"{'mask':>6} {'area':>6} {'plain ms':>10} {'TS ms':>10} {'time x':>7}"
    if not args.no_memory:
        header += f" {'plain MiB':>10} {'TS MiB':>10} {'mem x':>6}"
    print(f"config={args.config} size={args.size} batch={args.batch} device={device} "
          f"threads={torch.get_num_threads()} repeats={repeats} warmup={warmup} (medians)")
    print(header)
    result = {"config": args.config, "size": args.size, "batch": args.batch, "device": str(device),
              "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup}
    for row in rows:
        key = f"{round(100 * row['rate'])}pct"
        t_ratio = ratio(row["ts_ms"], row["plain_ms"])
        line = (f"{100 * row['rate']:5.0f}% {100 * row['mask_area']:5.1f}% {row['plain_ms']:10.1f} "
                f"{row['ts_ms']:10.1f} {t_ratio:7.3f}")
        result[f"ts_over_plain_time_{key}"] = round(t_ratio, 4)
        result[f"plain_ms_{key}"] = round(row["plain_ms"], 2)
        result[f"ts_ms_{key}"] = round(row["ts_ms"], 2)
        result[f"mask_area_{key}"] = round(row["mask_area"], 4)
        if not args.no_memory:
            m_ratio = ratio(row["ts_mem"], row["plain_mem"])
            mib = [None if v is None else v / 2 ** 20 for v in (row["plain_mem"], row["ts_mem"])]
            line += "".join(f" {'n/a':>10}" if v is None else f" {v:10.1f}" for v in mib)
            line += f" {'n/a':>6}" if m_ratio is None else f" {m_ratio:6.3f}"
            result[f"ts_over_plain_mem_{key}"] = None if m_ratio is None else round(m_ratio, 4)
            result[f"plain_mem_mib_{key}"] = None if mib[0] is None else round(mib[0], 2)
            result[f"ts_mem_mib_{key}"] = None if mib[1] is None else round(mib[1], 2)
        print(line)
    print(json.dumps(result))
    return result


def main(argv=None) -> int:
    run(argv)
    return 0
