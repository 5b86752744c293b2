"""Multi-process training goes through Lightning's DDP: two CPU processes end with identical weights."""
import os
import subprocess
import sys

import torch

from tests.helpers import REPO, TOY_VQGAN


def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    dump = tmp_path / "dump"
    cmd = [sys.executable, "main.py", "--base", TOY_VQGAN, "-t", "-l", str(tmp_path / "logs"),
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--max_steps", "4",
           "data.params.batch_size=4", "data.params.train.params.length=64",
           "model.params.lossconfig.params.disc_start=2",  # both the generator and the discriminator step
           "lightning.trainer.val_check_interval=1.0",
           # periodic last.ckpt under DDP: by steps, and by rank 0's clock (due at every step), broadcast
           "--save_every_n_steps", "3", "--save_every_minutes", "0.0001",
           "lightning.callbacks.dump.target=tests.helpers.RankWeightsDump",
           f"lightning.callbacks.dump.params.out_dir={dump}"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "(num_gpus)" in proc.stdout and "* 2 (num_gpus)" in proc.stdout  # lr scaled by the process count

    start0, start1 = (torch.load(dump / f"rank{r}_start.pt", weights_only=True) for r in (0, 1))
    end0, end1 = (torch.load(dump / f"rank{r}_end.pt", weights_only=True) for r in (0, 1))
    assert end0["world_size"] == 2 and end0["global_step"] == end1["global_step"] == 4
    for key, value in end0["state_dict"].items():
        assert torch.equal(value, end1["state_dict"][key]), f"ranks differ at {key}"
    moved = [k for k, v in end0["state_dict"].items() if not torch.equal(v, start0["state_dict"][k])]
    assert any(k.startswith("encoder.") for k in moved)
    assert any(k.startswith("loss.discriminator.") for k in moved)  # the discriminator was trained too
    runs = os.listdir(tmp_path / "logs")
    assert len(runs) == 1, runs  # both processes agreed on one run directory
    last = tmp_path / "logs" / runs[0] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert "Saved " in proc.stdout and "(every 0.0001 minutes" in proc.stdout
