"""Train a chain of main.py runs, each stage on the checkpoints of the ones before it, resumably.

The demos (`ilat_ext.apps.demo_faces`, `ilat_ext.apps.demo_poses`) describe their chain as a list
of `Stage`s; `train_chain` trains, resumes or reuses each one in order (an interrupted demo
continues where it stopped) and returns the run folders.
"""
import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ilat_ext.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(REPO, "configs", "toy")


@dataclass
class Stage:
    """One main.py run of the chain: its name, config, step count and overrides ({run} fields are
    filled with the checkpoints of earlier stages)."""
    name: str
    config: str
    steps: int
    overrides: Sequence[str] = ()


def find_run(logdir: str, name: str) -> Optional[str]:
    """The newest run folder `<logdir>/<timestamp>_<name>` holding checkpoints/last.ckpt, or None."""
    runs = sorted(d for d in glob.glob(os.path.join(logdir, f"????-??-??T??-??-??_{name}"))
                  if os.path.isfile(os.path.join(d, "checkpoints", "last.ckpt")))
    return runs[-1] if runs else None


def run_steps(run: str) -> int:
    """The global step stored in a run's last.ckpt."""
    return int(load_checkpoint(os.path.join(run, "checkpoints", "last.ckpt")).get("global_step", 0))


def saved_config(run: str):
    """A run's configuration as `--resume` rebuilds it: its configs/*.yaml merged in name order."""
    from omegaconf import OmegaConf

    paths = sorted(glob.glob(os.path.join(run, "configs", "*.yaml")))
    return OmegaConf.merge(*[OmegaConf.load(p) for p in paths]) if paths else OmegaConf.create()


def _mismatched_overrides(run: str, overrides: Sequence[str]) -> List[str]:
    """The `key=value` overrides (earlier stages' checkpoints included) that `run` was not trained with."""
    from omegaconf import OmegaConf

    def same(a, b) -> bool:
        if isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.exists(b):
            return os.path.realpath(a) == os.path.realpath(b)  # `--out demo` and `--out ./demo`
        return a == b

    config, wanted = saved_config(run), OmegaConf.from_dotlist(list(overrides))
    keys = [o.split("=", 1)[0] for o in overrides]
    return [f"{k}={OmegaConf.select(config, k)}" for k in keys
            if not same(OmegaConf.select(config, k), OmegaConf.select(wanted, k))]


def _schedule_length(run: str) -> Optional[int]:
    """The max_steps a run was started with (its learning-rate schedule ends there)."""
    return saved_config(run).get("lightning", {}).get("trainer", {}).get("max_steps")


def train_chain(stages: Sequence[Stage], logdir: str, fresh: bool = False, extra: Sequence[str] = (),
                log: Callable[[str], None] = logger.info) -> Dict[str, str]:
    """Train, resume or reuse every stage in order through main.py; returns {stage name: run folder}.

    A stage's newest run is reused when it has all its steps and was trained on the checkpoints
    the earlier stages have now; resumed (`main.py -r RUN -t`, the same run folder) when it
    stopped early, e.g. at Ctrl-C, and its schedule has the same length; otherwise trained anew.
    Once a stage trains, every later stage trains anew: they were trained on its old weights.
    `log` gets one line per stage (reused, resumed, trained, done).
    """
    from ilat_ext import main as cli

    runs: Dict[str, str] = {}
    ckpts: Dict[str, str] = {}
    upstream_changed = False
    for stage in stages:
        overrides = [o.format(**ckpts) for o in stage.overrides]
        run = None if fresh or upstream_changed else find_run(logdir, stage.name)
        mismatched = [] if run is None else _mismatched_overrides(run, overrides)
        if mismatched:
            log(f"[{stage.name}] not reusing {run}: it was trained with {', '.join(mismatched)}")
            run = None
        steps = 0 if run is None else run_steps(run)
        if run is not None and steps >= stage.steps:
            log(f"[{stage.name}] reusing {run} ({steps} steps)")
        else:
            start = time.perf_counter()
            if run is not None and steps > 0 and _schedule_length(run) == stage.steps:
                log(f"[{stage.name}] resuming {run} at step {steps} of {stage.steps}")
                cli.main(["-r", run, "-t", "--max_steps", str(stage.steps), *extra])
            else:
                log(f"[{stage.name}] training {os.path.relpath(stage.config, REPO)} for {stage.steps} steps")
                cli.main(["-l", logdir, "--base", stage.config, "-t", "-n", stage.name, "--max_steps",
                          str(stage.steps), *overrides, *extra])
            run = find_run(logdir, stage.name)
            if run is None or run_steps(run) < stage.steps:
                raise RuntimeError(f"stage {stage.name} stopped before its {stage.steps} steps: "
                                   f"{logdir}/*_{stage.name}/checkpoints/last.ckpt is missing or short "
                                   "(run the demo again to resume it)")
            log(f"[{stage.name}] done in {time.perf_counter() - start:.0f} s: {run}")
            upstream_changed = True
        runs[stage.name] = run
        ckpts[stage.name] = os.path.join(run, "checkpoints", "last.ckpt")
    return runs
