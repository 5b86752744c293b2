"""Convert the iLAT authors' published FFHQ checkpoints into an ordinary ilat_ext run folder.

The authors' README has users download three folders: `sketch_ffhq_V1` (sketch VQGAN:
`sketch_config.yml` + `<model_type>_g_last.pth`), `tsvqgan_ffhq_V1` (TS-VQGAN: `config.yml` +
`<model_type>_g_best_fid.pth`, the file their notebook loads, or `_g_last.pth`) and `iLAT_ffhq_V1`
(transformer: `transformer_config.yml` + `<model_type>_last.pth`). Their `.pth` files are `torch.save`
dicts ({'iteration', 'g_model', 'g_opt'} and {'iteration', 'model', 'opt'}), in torch's zip
format or the legacy (pre-1.6) one; optimizer entries are ignored and nothing else is read.

    write_release_run(sketch_dir, tsvqgan_dir, transformer_dir, out_dir) -> ConversionReport

reads them through the safe loader (`ilat_ext.checkpoint.load_checkpoint`: no pickled code runs),
builds the ilat_ext models their configs describe (`release_model_config`: the architecture
options of docs/models.md, "The authors' released models"), maps every key (`map_transformer_keys`,
the stages one to one), refuses to write a run with any key unmapped or missing, and writes
`out_dir/configs/release-project.yaml` + `out_dir/checkpoints/last.ckpt` through a temporary
folder renamed at the end. Every refusal is a `ConversionError` whose one-line message names the file
and the mismatch (the CLI exits with code 2).
"""
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import yaml
from omegaconf import OmegaConf

from ilat_ext.checkpoint import UnsafeCheckpointError, load_checkpoint

SKETCH_CONFIG = "sketch_config.yml"
TSVQGAN_CONFIG = "config.yml"
TRANSFORMER_CONFIG = "transformer_config.yml"
CONFIG_FILES = (SKETCH_CONFIG, TSVQGAN_CONFIG, TRANSFORMER_CONFIG)
# The notebook: sketch `_g_last`, TS-VQGAN `_g_best_fid`, transformer `_last`; the other naming as fallback.
PREFERRED = {"sketch": ("_last", "_best_fid"), "tsvqgan": ("_best_fid", "_last"), "transformer": ("_last", "_best_fid")}
DUMMY_LOSS = {"target": "taming.modules.losses.DummyLoss"}


class ConversionError(ValueError):
    """A folder, file, config or weight that cannot be converted; the message is one line."""


@dataclass
class ConversionReport:
    """What a conversion read and wrote: the three weight files, how many tensors were mapped, the
    release keys deliberately dropped (with why), and the run folder."""
    files: Dict[str, str]
    mapped: int
    dropped: Dict[str, str] = field(default_factory=dict)
    out_dir: str = ""

    def summary(self) -> str:
        lines = [f"wrote {self.out_dir} ({self.mapped} tensors mapped)"]
        lines += [f"  {role}: {path}" for role, path in self.files.items()]
        lines += [f"  dropped {key}: {why}" for key, why in self.dropped.items()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading the folders
def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConversionError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def _folder_config(folder: str, role: str, name: str) -> Dict[str, Any]:
    if not os.path.isdir(folder):
        raise ConversionError(f"--{role}: {folder} is not a folder")
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        present = [n for n in CONFIG_FILES if os.path.isfile(os.path.join(folder, n))]
        hint = f"; it holds {', '.join(present)}: is it another of the three folders?" if present else ""
        raise ConversionError(f"--{role}: {path} not found (the {role} folder holds {name}){hint}")
    return _read_yaml(path)


def _weights_file(folder: str, role: str, config: Mapping[str, Any], infix: str, prefix: Optional[str]) -> str:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConversionError(f"--{role}: the config in {folder} has no model_type (it names the weight files)")
    prefixes = (prefix,) if prefix else PREFERRED[role]
    candidates = [os.path.join(folder, f"{model_type}{infix}{p}.pth") for p in prefixes]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConversionError(f"--{role}: no weight file {' or '.join(os.path.basename(c) for c in candidates)} in {folder}")


def _load_entry(path: str, entry: str) -> Dict[str, torch.Tensor]:
    try:
        data = load_checkpoint(path, unsafe=False)
    except UnsafeCheckpointError as err:
        raise ConversionError(f"{path}: {str(err).splitlines()[0]}") from None
    except (RuntimeError, TypeError, OSError) as err:
        raise ConversionError(f"{path}: cannot be read ({str(err).splitlines()[0]})") from None
    if entry not in data:
        raise ConversionError(f"{path}: no '{entry}' entry (it has {sorted(data)}): not a file of this folder's kind")
    sd = data[entry]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConversionError(f"{path}: '{entry}' is not a state dict of tensors")
    # apex / DataParallel prefixes, if any
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


# ----------------------------------------------------------------------------- configs
def _ddconfig(config: Mapping[str, Any], path: str) -> Dict[str, Any]:
    try:
        params = config["model"]["params"]
        dd = dict(params["ddconfig"])
        n_embed, embed_dim = int(params["n_embed"]), int(params["embed_dim"])
    except (KeyError, TypeError, ValueError):
        raise ConversionError(f"{path}: no model.params.ddconfig / n_embed / embed_dim") from None
    if dd.get("norm", "IN") != "IN":
        raise ConversionError(f"{path}: norm {dd.get('norm')!r}: only the released 'IN' (InstanceNorm) is supported")
    if dd.get("act", "SWISH") != "SWISH":
        raise ConversionError(f"{path}: act {dd.get('act')!r}: only the released 'SWISH' is supported")
    if dd.get("use_attention", False):
        raise ConversionError(f"{path}: use_attention true: the released models have no attention; not supported")
    if dd.get("double_z", False):
        raise ConversionError(f"{path}: double_z true is not supported (the released models have double_z false)")
    return dict(dd=dd, n_embed=n_embed, embed_dim=embed_dim, path=path)


def _released_norm() -> Dict[str, Any]:
    return {"norm_type": "instance", "norm_eps": 1e-5, "norm_affine": False}


def release_model_config(sketch_cfg: Mapping[str, Any], ts_cfg: Mapping[str, Any], tr_cfg: Mapping[str, Any],
                         paths: Mapping[str, str]) -> Dict[str, Any]:
    """The ilat_ext `model:` config (target/params) for the three release configs (their YAML dicts)."""
    sk = _ddconfig(sketch_cfg, paths["sketch"])
    ts = _ddconfig(ts_cfg, paths["tsvqgan"])
    sk_in = int(((sketch_cfg["model"]["params"].get("sketchconfig") or {}).get("params") or {}).get("in_channels", 1))
    common = lambda d: {k: d[k] for k in ("ch", "ch_mult", "num_res_blocks", "z_channels", "resolution")}  # noqa: E731
    try:
        sketch_dd = {**common(sk["dd"]), "in_channels": sk_in, "out_ch": sk_in, "dropout": float(sk["dd"].get("dropout", 0.0)),
                     **_released_norm()}
        ts_dd = {**common(ts["dd"]), "in_channels": 3, "out_ch": 3, "double_z": False, "attn_resolutions": [],
                 "dropout": float(ts["dd"].get("dropout", 0.0)), "mid_attn": False, "downsample": "conv4x4",
                 "tanh_out": True, **_released_norm()}
    except KeyError as err:
        raise ConversionError(f"a ddconfig lacks {err}") from None
    tp = paths["transformer"]
    if tr_cfg.get("init_gpt_with_vqvae"):
        raise ConversionError(f"{tp}: init_gpt_with_vqvae true (codebook-sized embeddings + projections) is not supported")
    if not tr_cfg.get("combined", True):
        raise ConversionError(f"{tp}: combined false: the released transformer runs the VQCombineModel TS-VQGAN")
    try:
        backbone = {"vocab_size": int(tr_cfg["vocab_size"]), "block_size": int(tr_cfg["sequence_length"]),
                    "n_layer": int(tr_cfg["n_layer"]), "n_head": int(tr_cfg["n_head"]), "n_embd": int(tr_cfg["n_embd"]),
                    "embd_pdrop": float(tr_cfg.get("embd_pdrop", 0.0)), "resid_pdrop": float(tr_cfg.get("resid_pdrop", 0.0)),
                    "attn_pdrop": float(tr_cfg.get("attn_pdrop", 0.0)), "head": "tied"}
    except (KeyError, TypeError, ValueError) as err:
        raise ConversionError(f"{tp}: missing or bad transformer setting {err}") from None
    return {
        "target": "ilat_ext.models.ILATTransformer",
        "params": {
            "first_stage_key": "image", "cond_stage_key": "sketch", "mask_key": "mask", "layout": "start",
            "input_last_token": True, "lm_rate": float(tr_cfg.get("lm_rate", 0.0)),
            "weight_decay": float(tr_cfg.get("weight_decay", 0.01)),
            "betas": [float(tr_cfg.get("beta1", 0.9)), float(tr_cfg.get("beta2", 0.95))],
            "warmup_steps": int(tr_cfg.get("warmup_iters", 0)),
            "decay_steps": int(tr_cfg["max_iters"]) if tr_cfg.get("max_iters") else None,
            "transformer_config": {"target": "ilat_ext.modules.gpt.GPT", "params": backbone},
            "first_stage_config": {"target": "ilat_ext.models.TSVQModel", "params": {
                "embed_dim": ts["embed_dim"], "n_embed": ts["n_embed"], "ddconfig": ts_dd, "lossconfig": DUMMY_LOSS}},
            "cond_stage_config": {"target": "ilat_ext.models.SketchVQModel", "params": {
                "image_key": "sketch", "embed_dim": sk["embed_dim"], "n_embed": sk["n_embed"], "ddconfig": sketch_dd,
                "lossconfig": DUMMY_LOSS}},
        },
    }


# ----------------------------------------------------------------------------- keys
def map_transformer_keys(sd: Mapping[str, torch.Tensor], path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The release transformer's state dict -> (ilat_ext ILATTransformer keys, dropped keys with why).

    z_emb -> transformer.tok_emb (z_dec is the same tied tensor), z_bias -> transformer.head_tied.bias,
    dec.{ln1,dense,ln2} -> transformer.head_tied.*, pos_emb.weight (S, C) -> transformer.pos_emb (1, S, C),
    blocks.* -> transformer.blocks.*, [c_emb; c_sp] -> cond_emb (c_s is code V), z_sp -> z_start (1, 1, C).
    c_dec (tied to c_emb) and c_bias only give condition-token logits, which nothing reads
    (the release's plm_in_cond is false). Anything else is left unmapped (the caller refuses)."""
    out, dropped, left = {}, {}, dict(sd)

    def take(key):
        if key not in left:
            raise ConversionError(f"{path}: key {key!r} is missing (not the released transformer's layout)")
        return left.pop(key)

    z_emb = take("z_emb.weight")
    out["transformer.tok_emb.weight"] = z_emb
    if "z_dec.weight" in left:
        if not torch.equal(left["z_dec.weight"], z_emb):
            raise ConversionError(f"{path}: z_dec.weight differs from z_emb.weight; the released head is tied to it")
        left.pop("z_dec.weight")
        dropped["z_dec.weight"] = "tied to z_emb.weight"
    out["transformer.head_tied.bias"] = take("z_bias")
    for part in ("ln1", "dense", "ln2"):
        for name in ("weight", "bias"):
            out[f"transformer.head_tied.{part}.{name}"] = take(f"dec.{part}.{name}")
    out["transformer.pos_emb"] = take("pos_emb.weight")[None]
    c_emb, c_sp, z_sp = take("c_emb.weight"), take("c_sp"), take("z_sp")
    out["cond_emb.weight"] = torch.cat([c_emb, c_sp.reshape(1, -1)], dim=0)
    out["z_start"] = z_sp.reshape(1, 1, -1)
    if "c_dec.weight" in left:
        left.pop("c_dec.weight")
        dropped["c_dec.weight"] = "tied to c_emb.weight; condition-token logits are never read"
    if "c_bias" in left:
        left.pop("c_bias")
        dropped["c_bias"] = "condition-token logits are never read (plm_in_cond false)"
    for key in [k for k in left if k.startswith("blocks.")]:
        out["transformer." + key] = left.pop(key)
    if left:
        raise ConversionError(f"{path}: {len(left)} key(s) left unmapped, e.g. {sorted(left)[:3]}: "
                              "not the released transformer's layout")
    return out, dropped


def _check_against(model: torch.nn.Module, mapped: Mapping[str, torch.Tensor], sources: Mapping[str, str],
                   config_names: Mapping[str, str]) -> None:
    own = model.state_dict()
    for key, value in mapped.items():
        prefix = key.split(".", 1)[0]
        path = sources.get(prefix, sources["transformer"])
        if key not in own:
            raise ConversionError(f"{path}: key {key.split('.', 1)[1] if prefix in ('first_stage_model', 'cond_stage_model') else key!r} "
                                  f"has no place in the model {config_names.get(prefix, TRANSFORMER_CONFIG)} describes "
                                  "(wrong folder, or a config that does not match the weights)")
        if tuple(own[key].shape) != tuple(value.shape):
            raise ConversionError(f"{path}: {key} has shape {tuple(value.shape)} in the file but "
                                  f"{tuple(own[key].shape)} under {config_names.get(prefix, TRANSFORMER_CONFIG)}")
    missing = [k for k in own if k not in mapped]
    if missing:
        prefix = missing[0].split(".", 1)[0]
        raise ConversionError(f"{sources.get(prefix, sources['transformer'])}: {len(missing)} weight(s) the model needs "
                              f"are not in the file, e.g. {missing[:3]} (wrong folder, or a config that does not match)")


# ----------------------------------------------------------------------------- the run
def read_release(sketch_dir: str, tsvqgan_dir: str, transformer_dir: str, sketch_prefix: Optional[str] = None,
                 tsvqgan_prefix: Optional[str] = None, transformer_prefix: Optional[str] = None):
    """-> (model config, ilat_ext state dict, ConversionReport without out_dir, release settings).
    Validates everything; raises ConversionError."""
    from ilat_ext.util import instantiate_from_config

    sk_cfg = _folder_config(sketch_dir, "sketch", SKETCH_CONFIG)
    ts_cfg = _folder_config(tsvqgan_dir, "tsvqgan", TSVQGAN_CONFIG)
    tr_cfg = _folder_config(transformer_dir, "transformer", TRANSFORMER_CONFIG)
    cfg_paths = {"sketch": os.path.join(sketch_dir, SKETCH_CONFIG), "tsvqgan": os.path.join(tsvqgan_dir, TSVQGAN_CONFIG),
                 "transformer": os.path.join(transformer_dir, TRANSFORMER_CONFIG)}
    files = {"sketch": _weights_file(sketch_dir, "sketch", sk_cfg, "_g", sketch_prefix),
             "tsvqgan": _weights_file(tsvqgan_dir, "tsvqgan", ts_cfg, "_g", tsvqgan_prefix),
             "transformer": _weights_file(transformer_dir, "transformer", tr_cfg, "", transformer_prefix)}
    model_cfg = release_model_config(sk_cfg, ts_cfg, tr_cfg, cfg_paths)

    sketch_sd = _load_entry(files["sketch"], "g_model")
    ts_sd = _load_entry(files["tsvqgan"], "g_model")
    tr_sd = _load_entry(files["transformer"], "model")
    mapped, dropped = map_transformer_keys(tr_sd, files["transformer"])
    mapped.update({"first_stage_model." + k: v for k, v in ts_sd.items()})
    mapped.update({"cond_stage_model." + k: v for k, v in sketch_sd.items()})
    try:
        model = instantiate_from_config(model_cfg)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"the configs describe no buildable model: {str(err).splitlines()[0]}") from None
    sources = {"first_stage_model": files["tsvqgan"], "cond_stage_model": files["sketch"], "transformer": files["transformer"]}
    names = {"first_stage_model": cfg_paths["tsvqgan"], "cond_stage_model": cfg_paths["sketch"]}
    _check_against(model, mapped, sources, {**names, "transformer": cfg_paths["transformer"]})
    release = {"combined_vqgan": bool(tr_cfg.get("combined_vqgan") or False),
               "model_types": {role: os.path.basename(path) for role, path in files.items()}}
    return model_cfg, mapped, ConversionReport(files, len(mapped), dropped), release


def write_release_run(sketch_dir: str, tsvqgan_dir: str, transformer_dir: str, out_dir: str,
                      overwrite: bool = False, **prefixes) -> ConversionReport:
    """Convert and write `out_dir` (configs/release-project.yaml, checkpoints/last.ckpt), all or nothing."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise ConversionError(f"{out_dir} already exists (pass --overwrite to replace it)")
    model_cfg, state_dict, report, release = read_release(sketch_dir, tsvqgan_dir, transformer_dir, **prefixes)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "configs"))
        os.makedirs(os.path.join(tmp, "checkpoints"))
        ckpt = os.path.join(out_dir, "checkpoints", "last.ckpt")
        params = dict(model_cfg["params"], ckpt_path=ckpt)  # main.py -t (finetuning) starts from these weights
        project = {"model": {"target": model_cfg["target"], "params": params},
                   "release": dict(release, converted=datetime.datetime.now().isoformat(timespec="seconds"),
                                   source_files={k: os.path.abspath(v) for k, v in report.files.items()})}
        OmegaConf.save(OmegaConf.create(project), os.path.join(tmp, "configs", "release-project.yaml"))
        torch.save({"state_dict": {k: v.contiguous() for k, v in state_dict.items()}, "global_step": 0,
                    "ilat_ext": {"format": 1, "class": model_cfg["target"], "config": model_cfg}},
                   os.path.join(tmp, "checkpoints", "last.ckpt"))
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out_dir = out_dir
    return report
