"""Upstream taming's `main.py`, ported to Lightning 2 with the same command line.

    python main.py --base configs/toy/vqgan.yaml -t --max_steps 20
    python main.py -r logs/<run> --max_steps 40          # continue the same run
    python main.py --base cfg.yaml -t --gpus 0,1         # DDP on two GPUs

Configs are merged left to right, then `key=value` dot-list overrides. Sections: `model`
(`base_learning_rate`, `target`, `params`), `data`, `lightning` (`trainer`, `callbacks`,
`logger`, `modelcheckpoint`, `checkpoint`). Runs are written to `logs/<%Y-%m-%dT%H-%M-%S>_<name>/` with
`checkpoints/` (`last.ckpt`, `{epoch:06}.ckpt`), `configs/` and `images/`; TensorBoard events go
to `tensorboard/`. What changed from upstream, and why:
- Trainer flags are explicit options (Lightning 2 dropped `Trainer.add_argparse_args`); legacy
  trainer keys in configs (`gpus`, `distributed_backend`, `resume_from_checkpoint`) are translated.
- Checkpoints are read through `ilat_ext.checkpoint` (no arbitrary unpickling unless
  `--unsafe-load`) and written atomically; `last.ckpt` is also rewritten every 30 minutes (and/or
  every N steps: `--save_every_minutes`, `--save_every_n_steps`, `lightning.checkpoint`), so that a
  SIGKILL loses at most one interval; upstream saved only at epoch ends and on signals.
- Under DDP every process computes the same run directory (the launcher's children inherit it).
"""
import argparse
import datetime
import glob
import inspect
import os
import shutil
import sys
from typing import List, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Trainer, seed_everything
from pytorch_lightning.strategies import DDPStrategy

from ilat_ext import checkpoint as ckpt_io
from ilat_ext.callbacks import ImageLogger, PeriodicCheckpoint, SetupCallback, SignalCheckpoint
from ilat_ext.data.checks import DataFilesMissing
from ilat_ext.data.datamodule import DataModuleFromConfig, WrappedDataset
from ilat_ext.data.upstream import check_data_files
from ilat_ext.runs import resolve_run
from ilat_ext.util import get_obj_from_str, instantiate_from_config, log_to_stdout

__all__ = ["main", "get_parser", "instantiate_from_config", "get_obj_from_str", "DataModuleFromConfig",
           "WrappedDataset", "SetupCallback", "ImageLogger", "PeriodicCheckpoint", "LearningRateMonitor", "parse_gpus"]

from pytorch_lightning.callbacks import LearningRateMonitor  # noqa: E402  (upstream configs name main.LearningRateMonitor)

_RUN_NOW_ENV = "ILAT_EXT_RUN_NOW"
# Trainer options accepted on the command line, with their types.
_TRAINER_FLAGS = {
    "accelerator": str, "devices": str, "strategy": str, "num_nodes": int, "max_steps": int,
    "max_epochs": int, "accumulate_grad_batches": int, "precision": str, "limit_val_batches": float,
    "val_check_interval": float, "check_val_every_n_epoch": int, "log_every_n_steps": int,
    "gradient_clip_val": float, "benchmark": None, "deterministic": None,
}
# `lightning.checkpoint` keys (PeriodicCheckpoint), also flags of the same name.
_CHECKPOINT_KEYS = ("save_every_n_steps", "save_every_minutes")
DEFAULT_SAVE_EVERY_MINUTES = 30.0


def str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {value!r}")


def get_parser(**parser_kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(**parser_kwargs)
    parser.add_argument("-n", "--name", type=str, const=True, default="", nargs="?", help="postfix for logdir")
    parser.add_argument("-r", "--resume", type=str, const=True, default="", nargs="?",
                        help="resume from a log dir or a checkpoint in a log dir")
    parser.add_argument("-b", "--base", nargs="*", metavar="base_config.yaml", default=list(),
                        help="paths to base configs, merged left to right; override with key=value")
    parser.add_argument("-t", "--train", type=str2bool, const=True, default=False, nargs="?", help="train")
    parser.add_argument("--no-test", type=str2bool, const=True, default=False, nargs="?", help="disable test")
    parser.add_argument("-p", "--project", help="name of new or path to existing project (unused, as upstream)")
    parser.add_argument("-d", "--debug", type=str2bool, nargs="?", const=True, default=False,
                        help="debug mode: the run is moved to logs/debug_runs/ at the end")
    parser.add_argument("-s", "--seed", type=int, default=23, help="seed for seed_everything")
    parser.add_argument("-f", "--postfix", type=str, default="", help="post-postfix for default name")
    parser.add_argument("-l", "--logdir", type=str, default="logs", help="directory holding the runs")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow full unpickling of checkpoints (runs pickled code: trusted files only)")
    parser.add_argument("--gpus", type=str, default=None,
                        help="GPU ids as upstream: '0,' = GPU 0, '0,1' = GPUs 0 and 1, '2' = two GPUs")
    parser.add_argument("--save_every_n_steps", type=int, default=None,
                        help="rewrite checkpoints/last.ckpt every N optimizer steps (also lightning.checkpoint)")
    parser.add_argument("--save_every_minutes", type=float, default=None,
                        help=f"rewrite checkpoints/last.ckpt every M minutes of training, default "
                             f"{DEFAULT_SAVE_EVERY_MINUTES:g}; 0 turns it off (also lightning.checkpoint)")
    for flag, kind in _TRAINER_FLAGS.items():
        if kind is None:
            parser.add_argument(f"--{flag}", type=str2bool, nargs="?", const=True, default=None)
        else:
            parser.add_argument(f"--{flag}", type=kind, default=None)
    return parser


def parse_gpus(value) -> Union[List[int], int]:
    """Upstream's `--gpus`: '0,' -> [0]; '0,1' -> [0, 1]; '2' -> 2 (a count); -1 -> all."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        return [int(v) for v in value]
    text = str(value).strip()
    try:
        if "," in text:
            return [int(v) for v in text.split(",") if v.strip() != ""]
        return int(text)
    except ValueError:
        raise ValueError(f"--gpus expects ids like '0,' or '0,1' or a count like '2', got {value!r}") from None


def _parse_devices(value):
    """`--devices 2` -> 2, `--devices 0,1` -> [0, 1], `--devices auto` -> 'auto'."""
    if not isinstance(value, str):
        return value
    if "," in value:
        return parse_gpus(value)
    try:
        return int(value)
    except ValueError:
        return value


def _translate_legacy_trainer_keys(trainer_config: dict) -> dict:
    """Map Lightning-1 trainer keys found in upstream configs to Lightning 2."""
    cfg = dict(trainer_config)
    if "gpus" in cfg:
        gpus = cfg.pop("gpus")
        if gpus not in (None, 0, "0", "", []):
            cfg.setdefault("accelerator", "gpu")
            cfg["devices"] = parse_gpus(gpus)
    backend = cfg.pop("distributed_backend", None)
    if backend:
        cfg.setdefault("strategy", backend)
    if cfg.get("accelerator") in ("ddp", "ddp_spawn", "dp"):  # Lightning 1.x used accelerator= for this
        cfg.setdefault("strategy", cfg.pop("accelerator"))
    if "resume_from_checkpoint" in cfg:
        raise ValueError("lightning.trainer.resume_from_checkpoint is gone in Lightning 2: use -r/--resume")
    for dropped in ("checkpoint_callback", "weights_summary", "progress_bar_refresh_rate"):
        if cfg.pop(dropped, None) is not None:
            print(f"Note: ignoring Lightning-1 trainer key '{dropped}'")
    if "devices" in cfg:
        cfg["devices"] = _parse_devices(cfg["devices"])
    return cfg


def _process_count(trainer_config: dict) -> int:
    """How many processes share one optimizer step (for learning-rate scaling)."""
    devices = trainer_config.get("devices", 1)
    if devices in (None, "auto"):
        devices = 1
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    else:
        count = int(devices)
        if count == -1:
            import torch
            count = torch.cuda.device_count() if trainer_config.get("accelerator") == "gpu" else 1
    return max(count, 1) * int(trainer_config.get("num_nodes", 1) or 1)


def resolve_resume(resume: str) -> Tuple[str, str, List[str], str]:
    """-r accepts a run directory or a checkpoint inside one; returns (logdir, ckpt, configs, name)."""
    logdir, ckpt = resolve_run(resume)
    configs = sorted(glob.glob(os.path.join(logdir, "configs", "*.yaml")))
    if not configs:
        raise FileNotFoundError(f"--resume: no configs/*.yaml in {logdir}")
    return logdir, ckpt, configs, os.path.basename(os.path.normpath(logdir))


def _run_timestamp() -> str:
    """One timestamp per run, shared with DDP children that re-execute this script."""
    is_child = int(os.environ.get("LOCAL_RANK", "0")) > 0
    if is_child and os.environ.get(_RUN_NOW_ENV):
        return os.environ[_RUN_NOW_ENV]
    now = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    os.environ[_RUN_NOW_ENV] = now
    return now


def _build_trainer_config(opt: argparse.Namespace, lightning_config: DictConfig) -> dict:
    trainer_config = OmegaConf.to_container(lightning_config.get("trainer", OmegaConf.create()), resolve=True)
    trainer_config = _translate_legacy_trainer_keys(trainer_config)
    cli = {flag: getattr(opt, flag) for flag in _TRAINER_FLAGS if getattr(opt, flag) is not None}
    if opt.gpus is not None:
        cli.setdefault("accelerator", "gpu")
        cli["devices"] = parse_gpus(opt.gpus)
    if "devices" in cli:
        cli["devices"] = _parse_devices(cli["devices"])
    trainer_config.update(cli)
    trainer_config.setdefault("accelerator", "cpu")  # as upstream: no --gpus means CPU
    known = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    unknown = sorted(set(trainer_config) - known)
    if unknown:
        raise ValueError(f"lightning.trainer has keys that are not Trainer arguments: {unknown}")
    return trainer_config


def _checkpoint_interval(opt: argparse.Namespace, lightning_config: DictConfig) -> dict:
    """`lightning.checkpoint` with the command line's flags on top: {save_every_n_steps, save_every_minutes}."""
    section = lightning_config.get("checkpoint") or OmegaConf.create()
    values = OmegaConf.to_container(section, resolve=True)
    unknown = sorted(set(values) - set(_CHECKPOINT_KEYS))
    if unknown:
        raise ValueError(f"lightning.checkpoint has unknown keys {unknown}; allowed: {list(_CHECKPOINT_KEYS)}")
    values.setdefault("save_every_n_steps", None)
    values.setdefault("save_every_minutes", DEFAULT_SAVE_EVERY_MINUTES)
    for key in _CHECKPOINT_KEYS:
        if getattr(opt, key) is not None:
            values[key] = getattr(opt, key)
    steps, minutes = values["save_every_n_steps"], values["save_every_minutes"]
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"save_every_n_steps must be a positive integer, got {steps!r}")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0):
        raise ValueError(f"save_every_minutes must be a number >= 0 (0: off), got {minutes!r}")
    return values


def _strategy_for(trainer_config: dict, model) -> object:
    """DDP for several processes. Models with parameters that a backward pass may not reach (a GAN
    trained with two backward passes per batch, frozen first stages) need find_unused_parameters."""
    strategy = trainer_config.get("strategy", "auto")
    several = _process_count(trainer_config) > 1
    if strategy == "ddp" or (strategy == "auto" and several):
        find_unused = bool(getattr(model, "ddp_find_unused_parameters", True))
        return DDPStrategy(find_unused_parameters=find_unused)
    return strategy


def _learning_rate(config: DictConfig, trainer_config: dict, model) -> None:
    if config.model.get("base_learning_rate") is None:
        raise KeyError("model.base_learning_rate is missing from the config")
    if "batch_size" not in config.data.get("params", {}):
        raise KeyError("data.params.batch_size is missing from the config")
    bs, base_lr = int(config.data.params.batch_size), float(config.model.base_learning_rate)
    ngpu = _process_count(trainer_config)
    accumulate = int(trainer_config.get("accumulate_grad_batches", 1) or 1)
    model.learning_rate = accumulate * ngpu * bs * base_lr
    print(f"Setting learning rate to {model.learning_rate:.2e} = {accumulate} (accumulate_grad_batches) * "
          f"{ngpu} (num_gpus) * {bs} (batchsize) * {base_lr:.2e} (base_lr)")


def _default_callbacks(opt, now, logdir, ckptdir, cfgdir, config, lightning_config) -> dict:
    return {
        "setup_callback": {"target": "ilat_ext.callbacks.SetupCallback",
                           "params": {"resume": opt.resume, "now": now, "logdir": logdir, "ckptdir": ckptdir,
                                      "cfgdir": cfgdir, "config": config, "lightning_config": lightning_config}},
        "image_logger": {"target": "ilat_ext.callbacks.ImageLogger",
                         "params": {"batch_frequency": 750, "max_images": 4, "clamp": True}},
        "learning_rate_logger": {"target": "pytorch_lightning.callbacks.LearningRateMonitor",
                                 "params": {"logging_interval": "step"}},
    }


def _explicit_flag_values(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """`-t key=value`: a flag that takes an optional true/false (-t, --no-test, -d, --benchmark, ...,
    as upstream's) would read the override as its value and fail with "boolean value expected";
    give the flag its True instead and keep the override."""
    flags = {s for a in parser._actions if a.type is str2bool and a.nargs == "?" for s in a.option_strings}
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in flags and i + 1 < len(argv) and "=" in argv[i + 1] and not argv[i + 1].startswith("-"):
            out.append("true")
    return out


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    """Run the command line; returns the Trainer (useful in tests). The library's log lines
    (config files saved, checkpoint reports, signals) are printed while it runs."""
    with log_to_stdout():
        return _main(argv)


def _main(argv: Optional[Sequence[str]]) -> Trainer:
    parser = get_parser()
    argv = _explicit_flag_values(parser, list(sys.argv[1:] if argv is None else argv))
    opt, unknown = parser.parse_known_args(argv)
    bad = [u for u in unknown if u.startswith("-")]
    if bad:
        parser.error(f"unrecognized options: {bad} (config overrides are written key=value)")
    if opt.name and opt.resume:
        raise ValueError("-n/--name and -r/--resume cannot both be given: a resumed run keeps its name")
    if not opt.resume and not opt.base:
        parser.error("give at least one config with --base, or a run to resume with -r")
    now = _run_timestamp()
    sys.path.append(os.getcwd())  # targets defined next to the configs, as upstream allows

    ckpt_for_resume = None
    if opt.resume:
        logdir, ckpt_for_resume, resume_configs, nowname = resolve_resume(opt.resume)
        opt.base = resume_configs + list(opt.base)
    else:
        if opt.name:
            name = "_" + opt.name
        elif opt.base:
            name = "_" + os.path.splitext(os.path.basename(opt.base[0]))[0]
        else:
            name = ""
        nowname = now + name + opt.postfix
        logdir = os.path.join(opt.logdir, nowname)
    ckptdir = os.path.join(logdir, "checkpoints")
    cfgdir = os.path.join(logdir, "configs")
    seed_everything(opt.seed, workers=True)
    ckpt_io.set_default_unsafe(opt.unsafe_load)

    for path in opt.base:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
    config = OmegaConf.merge(*[OmegaConf.load(p) for p in opt.base], OmegaConf.from_dotlist(list(unknown)))
    for section in ("model", "data"):
        if section not in config:
            raise KeyError(f"config has no '{section}' section (files: {opt.base})")
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:  # `???` in the config: values only the user can give (checkpoints of earlier stages)
        value = "logs/<run>/checkpoints/last.ckpt" if missing[0].endswith("ckpt_path") else "VALUE"
        parser.error(f"the config leaves {len(missing)} key(s) for the command line: {', '.join(missing)}; "
                     f"give each as key=value, e.g. {missing[0]}={value}")
    lightning_config = config.pop("lightning", OmegaConf.create())
    trainer_config = _build_trainer_config(opt, lightning_config)
    lightning_config.trainer = trainer_config
    try:
        interval = _checkpoint_interval(opt, lightning_config)
    except ValueError as err:
        parser.error(str(err))
    lightning_config.checkpoint = interval  # saved with the run, so that a resume keeps it
    print(f"Running on {trainer_config['accelerator']} with devices={trainer_config.get('devices', 'auto')}")

    # Upstream datasets that read fixed paths name what is missing before anything is built; ours
    # raise the same error when built. Either way no run folder is created.
    try:
        check_data_files(OmegaConf.to_container(config.data, resolve=True))
    except DataFilesMissing as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")  # one line: the usage says nothing about files
    # Before the model (which may need weight files) and the logger (which creates the run folder):
    # missing data is named first and leaves no empty run behind.
    data = instantiate_from_config(config.data)
    if isinstance(data, DataModuleFromConfig):
        try:
            data.setup("fit")  # builds the datasets (idempotent), as upstream's main.py does before fit
        except DataFilesMissing as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        print("#### Data ####: " + ", ".join(f"{k} {type(v).__name__} {len(v)}" for k, v in data.datasets.items()))
    model = instantiate_from_config(config.model)
    if hasattr(model, "build_config"):
        model.build_config = OmegaConf.to_container(config.model, resolve=True)
    will_test = (not opt.no_test and "test" in getattr(data, "dataset_configs", {})
                 and _overrides(model, "test_step"))
    if not opt.train and not will_test:
        # Upstream would go on and exit 0 having done nothing: `-r run` without -t looked like a
        # resume that finished at once. Still before the logger: no run folder is written.
        reason = ("--no-test was given" if opt.no_test else "there is no test to run (no data.params.test "
                  f"split, or {type(model).__name__} has no test_step)")
        what = "continue training the resumed run" if opt.resume else "train"
        parser.error(f"nothing to do: -t/--train was not given and {reason}; add -t to {what}")

    trainer_kwargs = dict(trainer_config)
    if not getattr(model, "automatic_optimization", True):
        # Lightning 2 refuses accumulate_grad_batches with manual optimisation; the model does it.
        model.accumulate_grad_batches = int(trainer_kwargs.pop("accumulate_grad_batches", 1) or 1)
    trainer_kwargs["strategy"] = _strategy_for(trainer_config, model)

    logger_cfg = OmegaConf.merge(
        {"target": "pytorch_lightning.loggers.TensorBoardLogger",
         "params": {"save_dir": logdir, "name": "tensorboard", "version": "", "default_hp_metric": False}},
        lightning_config.get("logger") or OmegaConf.create())
    trainer_kwargs["logger"] = instantiate_from_config(logger_cfg)

    modelckpt_cfg = OmegaConf.create({"target": "pytorch_lightning.callbacks.ModelCheckpoint",
                                      "params": {"dirpath": ckptdir, "filename": "{epoch:06}", "verbose": True,
                                                 "save_last": True, "save_on_train_epoch_end": True,
                                                 "enable_version_counter": False}})
    if getattr(model, "monitor", None):
        print(f"Monitoring {model.monitor} as checkpoint metric.")
        modelckpt_cfg.params.monitor = model.monitor
        modelckpt_cfg.params.save_top_k = 3
    modelckpt_cfg = OmegaConf.merge(modelckpt_cfg, lightning_config.get("modelcheckpoint") or OmegaConf.create())

    callbacks_cfg = OmegaConf.merge(_default_callbacks(opt, now, logdir, ckptdir, cfgdir, config, lightning_config),
                                    lightning_config.get("callbacks") or OmegaConf.create())
    callbacks = [instantiate_from_config(callbacks_cfg[k]) for k in callbacks_cfg]
    callbacks.append(instantiate_from_config(modelckpt_cfg))
    callbacks.append(SignalCheckpoint(os.path.join(ckptdir, "last.ckpt")))
    callbacks.append(PeriodicCheckpoint(os.path.join(ckptdir, "last.ckpt"), every_n_steps=interval["save_every_n_steps"],
                                        every_minutes=interval["save_every_minutes"]))
    trainer_kwargs["callbacks"] = callbacks
    trainer_kwargs["plugins"] = [ckpt_io.SafeCheckpointIO(unsafe=opt.unsafe_load)]
    trainer_kwargs.setdefault("default_root_dir", logdir)

    _learning_rate(config, trainer_config, model)
    trainer = Trainer(**trainer_kwargs)

    try:
        if opt.train:
            # weights_only=True only tells Lightning what SafeCheckpointIO does anyway (it decides).
            trainer.fit(model, data, ckpt_path=ckpt_for_resume, weights_only=not opt.unsafe_load)
        if will_test and not trainer.interrupted:
            trainer.test(model, data)
    finally:
        if opt.debug and not opt.resume and trainer.global_rank == 0 and os.path.isdir(logdir):
            dst = os.path.join(os.path.dirname(logdir), "debug_runs", os.path.basename(logdir))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(logdir, dst)
    return trainer


def _overrides(model, method: str) -> bool:
    return getattr(type(model), method, None) is not getattr(pl.LightningModule, method, None)


if __name__ == "__main__":
    main()
