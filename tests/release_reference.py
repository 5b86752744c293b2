"""A compact reference of the iLAT authors' released models, written from the equations in
/work/shared/reference/release-architecture.md (ewrfcas/iLAT @ 898412b): same key names, shapes
and file dicts as theirs, tiny widths. Used by tests/test_release.py to check the converter and both
editing paths against a direct computation of the release's maths. Our own code: nothing here
comes from their repository, and nothing here imports ilat_ext.
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

TINY = dict(res=32, ch=8, ch_mult=[1, 2, 2], nrb=1, z=8, n_e=16, e_dim=8, n_embd=16, n_head=2, n_layer=2)


def norm(x):  # nn.InstanceNorm2d(C): whole-map statistics, eps 1e-5, no affine
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def swish(x):
    return x * torch.sigmoid(x)


def plm_conv(conv, x, mask, k, stride, pad):
    """Eq. 3 as the release writes it: ring = (ones-kernel conv of the mask > 0) - pooled mask."""
    if mask is None:
        return conv(x)
    f1, f2 = conv(x), conv(x * (1 - mask))
    leak = (F.conv2d(mask, torch.ones(1, 1, k, k, dtype=x.dtype), stride=stride, padding=pad) > 0).to(x.dtype)
    m = F.max_pool2d(mask, stride, stride) if stride > 1 else mask
    leak = torch.clamp(leak - m, 0, 1)
    return f1 * (1 - leak) + f2 * leak


class Res(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, mask=None):
        h = plm_conv(self.conv1, swish(norm(x)), mask, 3, 1, 1)
        h = plm_conv(self.conv2, swish(norm(h)), mask, 3, 1, 1)
        if self.cin != self.cout:
            x = plm_conv(self.nin_shortcut, x, mask, 1, 1, 0)
        return x + h


class Conv(nn.Module):  # a module holding `.conv` (their Downsample / Upsample wrappers)
    def __init__(self, cin, cout, k, s, p):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p)


class TSEncoder(nn.Module):
    def __init__(self, t=TINY, cin=3):
        super().__init__()
        ch, mult = t["ch"], t["ch_mult"]
        self.conv_in = nn.Conv2d(cin, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, m in enumerate(mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(t["nrb"]):
                level.block.append(Res(block_in, ch * m))
                block_in = ch * m
            if i != len(mult) - 1:
                level.downsample = Conv(block_in, block_in, 4, 2, 1)
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.block_2 = Res(block_in, block_in), Res(block_in, block_in)
        self.conv_out = nn.Conv2d(block_in, t["z"], 3, 1, 1)

    def forward(self, x, mask=None):
        h = plm_conv(self.conv_in, x, mask, 3, 1, 1)
        for i, level in enumerate(self.down):
            for block in level.block:
                h = block(h, mask)
            if i != len(self.down) - 1:
                h = plm_conv(level.downsample.conv, h, mask, 4, 2, 1)
            if mask is not None:
                f = mask.shape[2] // h.shape[2]
                mask = F.max_pool2d(mask, f, f)
        h = self.mid.block_2(self.mid.block_1(h, mask), mask)
        return plm_conv(self.conv_out, swish(norm(h)), mask, 3, 1, 1)


class Decoder(nn.Module):  # taming's layout without attention, tanh at the end
    def __init__(self, t=TINY, cout=3):
        super().__init__()
        ch, mult = t["ch"], t["ch_mult"]
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(t["z"], block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.block_2 = Res(block_in, block_in), Res(block_in, block_in)
        self.up = nn.ModuleList()
        for i in reversed(range(len(mult))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(t["nrb"] + 1):
                level.block.append(Res(block_in, ch * mult[i]))
                block_in = ch * mult[i]
            if i != 0:
                level.upsample = Conv(block_in, block_in, 3, 1, 1)
            self.up.insert(0, level)
        self.conv_out = nn.Conv2d(block_in, cout, 3, 1, 1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for i in reversed(range(len(self.up))):
            for block in self.up[i].block:
                h = block(h)
            if i != 0:
                h = self.up[i].upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.conv_out(swish(norm(h))))


class SketchEncoder(nn.Module):
    def __init__(self, t=TINY, cin=1):
        super().__init__()
        ch, mult = t["ch"], t["ch_mult"]
        self.conv_in = nn.Sequential(nn.ReflectionPad2d(6), nn.Conv2d(cin, ch, 13))
        self.down = nn.ModuleList()
        for i in range(len(mult) - 1):
            level = nn.Module()
            level.downsample = Conv(ch * mult[i], ch * mult[i + 1], 4, 2, 1)
            level.block = nn.ModuleList([Res(ch * mult[i + 1], ch * mult[i + 1]) for _ in range(t["nrb"])])
            self.down.append(level)
        w = ch * mult[-1]
        self.mid = nn.Module()
        self.mid.block_1, self.mid.block_2 = Res(w, w), Res(w, w)
        self.conv_out = nn.Conv2d(w, t["z"], 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level.downsample.conv(h)
            for block in level.block:
                h = block(h)
        return self.conv_out(swish(norm(self.mid.block_2(self.mid.block_1(h)))))


class SketchDecoder(nn.Module):
    def __init__(self, t=TINY, cout=1):
        super().__init__()
        ch, mult = t["ch"], t["ch_mult"]
        w = ch * mult[-1]
        self.conv_in = nn.Conv2d(t["z"], w, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.block_2 = Res(w, w), Res(w, w)
        self.up = nn.ModuleList()
        for i in range(1, len(mult)):
            level = nn.Module()
            level.block = nn.ModuleList([Res(w, w) for _ in range(t["nrb"] + 1)])
            level.upsample = Conv(w, ch * mult[-i - 1], 3, 1, 1)
            w = ch * mult[-i - 1]
            self.up.insert(0, level)
        self.conv_out = nn.Conv2d(w, cout, 3, 1, 1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for i in reversed(range(len(self.up))):
            for block in self.up[i].block:
                h = block(h)
            h = self.up[i].upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.conv_out(swish(norm(h))))


class Quantize(nn.Module):
    def __init__(self, n_e, e_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def indices(self, z):  # (B, D, h, w) -> (B, h*w): argmin of z^2 + e^2 - 2 z.e
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        d = (flat ** 2).sum(1, keepdim=True) + (self.embedding.weight ** 2).sum(1) - 2 * flat @ self.embedding.weight.t()
        return d.argmin(1).view(z.shape[0], -1)


class VQ(nn.Module):
    def __init__(self, encoder, decoder, t=TINY):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.quantize = Quantize(t["n_e"], t["e_dim"])
        self.quant_conv = nn.Conv2d(t["z"], t["e_dim"], 1)
        self.post_quant_conv = nn.Conv2d(t["e_dim"], t["z"], 1)

    def encode_indices(self, x, *mask):
        return self.quantize.indices(self.quant_conv(self.encoder(x, *mask)))

    def decode_indices(self, idx, side):
        q = self.quantize.embedding(idx).view(idx.shape[0], side, side, -1).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(q))


def gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.Module()
        for name in ("key", "query", "value", "proj"):
            setattr(self.attn, name, nn.Linear(c, c))
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.Identity(), nn.Linear(4 * c, c), nn.Dropout(0.0))


class GPT(nn.Module):
    def __init__(self, t=TINY, seq=None):
        super().__init__()
        c, v = t["n_embd"], t["n_e"]
        self.n_head = t["n_head"]
        self.z_emb, self.c_emb = nn.Embedding(v, c), nn.Embedding(v, c)
        self.z_sp = nn.Parameter(torch.randn(1, c) * 0.02)
        self.c_sp = nn.Parameter(torch.randn(1, c) * 0.02)
        self.pos_emb = nn.Embedding(seq, c)
        self.blocks = nn.ModuleList([Block(c) for _ in range(t["n_layer"])])
        self.dec = nn.Module()
        self.dec.ln1, self.dec.dense, self.dec.ln2 = nn.LayerNorm(c), nn.Linear(c, c), nn.LayerNorm(c)
        self.z_dec = nn.Linear(c, v, bias=False)
        self.z_dec.weight = self.z_emb.weight
        self.z_bias = nn.Parameter(torch.randn(v) * 0.1)
        self.c_dec = nn.Linear(c, v, bias=False)
        self.c_dec.weight = self.c_emb.weight
        self.c_bias = nn.Parameter(torch.zeros(v))
        for mod in self.modules():  # lively LayerNorms and biases, so a wrong head or norm shows
            if isinstance(mod, nn.LayerNorm):
                mod.weight.data.normal_(1.0, 0.3)
                mod.bias.data.normal_(0.0, 0.3)
            elif isinstance(mod, nn.Linear) and mod.bias is not None:
                mod.bias.data.normal_(0.0, 0.1)
        self.z_emb.weight.data.normal_(0, 0.5)
        self.c_emb.weight.data.normal_(0, 0.5)
        self.pos_emb.weight.data.normal_(0, 0.5)

    def forward(self, c_idx, z_idx, mask):
        """Logits of the z stream (B, L + 1, V) under the (B, S, S) {0, 1} mask."""
        B = c_idx.shape[0]
        x = torch.cat([self.c_sp[None].expand(B, 1, -1), self.c_emb(c_idx),
                       self.z_sp[None].expand(B, 1, -1), self.z_emb(z_idx)], 1)
        x = x + self.pos_emb(torch.arange(x.shape[1]))[None]
        H = self.n_head
        for blk in self.blocks:
            h = blk.ln1(x)
            T, C = h.shape[1], h.shape[2]
            q, k, v = (getattr(blk.attn, n)(h).view(B, T, H, C // H).transpose(1, 2) for n in ("query", "key", "value"))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            att = att.masked_fill(mask[:, None] == 0, float("-inf")).softmax(-1)
            x = x + blk.attn.proj((att @ v).transpose(1, 2).reshape(B, T, C))
            x = x + blk.mlp[2](gelu(blk.mlp[0](blk.ln2(x))))
        x = self.dec.ln2(gelu(self.dec.dense(self.dec.ln1(x))))
        return self.z_dec(x[:, c_idx.shape[1] + 1:]) + self.z_bias


def build_mask(m):
    """Their `build_mask` arithmetic: m (B, 1, h, w) {0,1} latent mask (1 = unknown) -> (B, S, S)."""
    B = m.shape[0]
    L = m.shape[2] * m.shape[3]
    known = torch.cat([torch.ones(B, 1, 1, dtype=m.dtype), 1 - m.reshape(B, 1, L)], 2)      # (B, 1, L+1)
    mask_t = known.transpose(1, 2).repeat(1, 1, L + 1)
    known = known.repeat(1, L + 1, 1)
    mask_t = mask_t * known + (1 - mask_t)
    M = torch.clamp(known + torch.tril(torch.ones_like(known)) * mask_t, 0, 1)
    top = torch.cat([torch.ones_like(M), torch.zeros_like(M)], 2)
    return torch.cat([top, torch.cat([torch.ones_like(M), M], 2)], 1)


def sample(gpt, z, c, m):
    """Their sampler, batch 1: z (1, L) tokens, c (1, L) condition tokens, m (1, 1, h, w) latent mask."""
    z, m = z.clone(), m.clone()
    side = m.shape[3]
    for pos in torch.where(m.reshape(-1) == 1)[0].tolist():
        logits = gpt(c, z, build_mask(m))[:, pos]
        z[0, pos] = logits.argmax(-1)
        m[0, 0, pos // side, pos % side] = 0
    return z


def combined_mask(mask, min_size=16):
    """Their `get_combined_mask`: max-pools at min_size, 2 min_size, ... averaged coarse to fine, bilinear up."""
    final, size, top = None, min_size, mask.shape[2]
    while size < top:
        mp = F.max_pool2d(mask, top // size, top // size)
        if final is None:
            final = mp
        else:
            final = torch.cat([F.interpolate(final, (size, size), mode="nearest"), mp], 1).mean(1, keepdim=True)
        size *= 2
    return F.interpolate(final, (top, top), mode="bilinear")


# ----------------------------------------------------------------------------- files
def build(seed=0, t=TINY):
    torch.manual_seed(seed)
    sketch = VQ(SketchEncoder(t), SketchDecoder(t), t)
    ts = VQ(TSEncoder(t), Decoder(t), t)
    side = t["res"] // 2 ** (len(t["ch_mult"]) - 1)
    gpt = GPT(t, seq=2 * (side * side + 1))
    for module in (sketch, ts):  # codebooks spread like trained ones, so argmin ties never happen
        module.quantize.embedding.weight.data.normal_(0, 1.0)
    return sketch, ts, gpt


def _ddconfig(t, attn=True):
    return {"act": "SWISH", "norm": "IN", "use_attention": False, "double_z": False, "z_channels": t["z"],
            "resolution": t["res"], "ch": t["ch"], "ch_mult_enc": [1, 2], "ch_mult": list(t["ch_mult"]),
            "num_res_blocks": t["nrb"], "attn_resolutions": [16], "dropout": 0.0}


def write_folders(root, sketch, ts, gpt, t=TINY, legacy=False, ts_prefix="_best_fid"):
    """The three folders as the authors ship them; returns (sketch_dir, tsvqgan_dir, transformer_dir)."""
    save = (lambda obj, p: torch.save(obj, p, _use_new_zipfile_serialization=False)) if legacy else torch.save
    dirs = [os.path.join(root, n) for n in ("sketch_ffhq_V1", "tsvqgan_ffhq_V1", "iLAT_ffhq_V1")]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    vq = lambda mt: {"model_type": mt, "combined": True, "float16": True,  # noqa: E731
                     "model": {"params": {"embed_dim": t["e_dim"], "n_embed": t["n_e"], "ddconfig": _ddconfig(t),
                                          "sketchconfig": {"params": {"in_channels": 1, "out_ch": 1}}}}}
    side = t["res"] // 2 ** (len(t["ch_mult"]) - 1)
    tr = {"model_type": "iLAT", "combined": True, "trans_size": side, "init_gpt_with_vqvae": False,
          "plm_in_cond": False, "lm_rate": 0.15, "sequence_length": 2 * (side * side + 1), "n_quant": t["e_dim"],
          "n_embd": t["n_embd"], "n_head": t["n_head"], "attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1,
          "vocab_size": t["n_e"], "n_layer": t["n_layer"], "lr": 5e-5, "beta1": 0.9, "beta2": 0.95,
          "weight_decay": 0.01, "max_iters": 300000, "warmup_iters": 10000}
    for d, name, cfg in zip(dirs, ("sketch_config.yml", "config.yml", "transformer_config.yml"),
                            (vq("SKVQGAN"), vq("TS-VQGAN"), tr)):
        with open(os.path.join(d, name), "w") as f:
            yaml.safe_dump(cfg, f)
    opt = lambda m: torch.optim.Adam(m.parameters()).state_dict()  # noqa: E731
    save({"iteration": 7, "g_model": sketch.state_dict(), "g_opt": opt(sketch)}, os.path.join(dirs[0], "SKVQGAN_g_last.pth"))
    save({"iteration": 7, "g_model": ts.state_dict(), "g_opt": opt(ts)}, os.path.join(dirs[1], f"TS-VQGAN_g{ts_prefix}.pth"))
    save({"d_model": {"w": torch.zeros(1)}, "d_opt": {}}, os.path.join(dirs[1], "TS-VQGAN_d_best_fid.pth"))
    save({"iteration": 7, "model": gpt.state_dict(), "opt": opt(gpt)}, os.path.join(dirs[2], "iLAT_last.pth"))
    return dirs
