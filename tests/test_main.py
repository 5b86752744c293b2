"""main.py: the upstream command line on Lightning 2 (log layout, resume, flags, signals, errors)."""
import glob
import os

import pytest
import torch

from ilat_ext import main as cli
from ilat_ext.util import get_obj_from_str
from tests.helpers import TOY_VQGAN

FAST = ["data.params.train.params.length=64", "lightning.trainer.val_check_interval=1.0"]


def _run(tmp_path, *args):
    return cli.main(["-l", str(tmp_path / "logs"), *args])


def _single_run_dir(tmp_path):
    runs = sorted(glob.glob(str(tmp_path / "logs" / "*")))
    assert len(runs) == 1, runs
    return runs[0]


def test_train_writes_upstream_log_layout_then_resume_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    trainer = _run(tmp_path, "--base", TOY_VQGAN, "-t", "--max_steps", "20")
    assert trainer.global_step == 20
    out = capsys.readouterr().out
    # upstream's learning-rate line: accumulate * gpus * batch size * base lr
    assert "Setting learning rate to 2.00e-04 = 1 (accumulate_grad_batches) * 1 (num_gpus) * 8 (batchsize)" in out

    logdir = _single_run_dir(tmp_path)
    name = os.path.basename(logdir)
    assert name.endswith("_vqgan") and len(name.split("_")[0]) == len("2026-01-01T00-00-00")
    ckpts = sorted(os.listdir(os.path.join(logdir, "checkpoints")))
    assert "last.ckpt" in ckpts and any(c.startswith("epoch=") for c in ckpts), ckpts
    configs = sorted(os.listdir(os.path.join(logdir, "configs")))
    assert [c.split("-")[-1] for c in configs] == ["lightning.yaml", "project.yaml"], configs
    for split in ("train", "val"):
        pngs = glob.glob(os.path.join(logdir, "images", split, "*.png"))
        assert any(os.path.basename(p).startswith("reconstructions_gs-") for p in pngs), (split, pngs)
        assert any(os.path.basename(p).startswith("overview_gs-") for p in pngs), (split, pngs)
    assert glob.glob(os.path.join(logdir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True)

    last = os.path.join(logdir, "checkpoints", "last.ckpt")
    first = torch.load(last, weights_only=True)
    assert first["global_step"] == 20
    assert first["ilat_ext"]["config"]["target"] == "ilat_ext.models.VQModel"

    trainer = _run(tmp_path, "-r", logdir, "-t", "--max_steps", "40")
    assert trainer.global_step == 40
    assert _single_run_dir(tmp_path) == logdir  # same run, same name
    second = torch.load(last, weights_only=True)
    assert second["global_step"] == 40
    assert len(os.listdir(os.path.join(logdir, "configs"))) == 4  # one more project/lightning pair
    changed = [k for k in first["state_dict"] if not torch.equal(first["state_dict"][k], second["state_dict"][k])]
    assert any(k.startswith("encoder.") for k in changed)


def test_resume_from_checkpoint_file_and_bad_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "--base", TOY_VQGAN, "-t", "--max_steps", "3", *FAST)
    logdir = _single_run_dir(tmp_path)
    trainer = _run(tmp_path, "-r", os.path.join(logdir, "checkpoints", "last.ckpt"), "-t", "--max_steps", "5")
    assert trainer.global_step == 5
    with pytest.raises(FileNotFoundError, match="cannot find"):
        _run(tmp_path, "-r", str(tmp_path / "logs" / "nope"), "-t")
    with pytest.raises(ValueError, match="cannot both"):
        _run(tmp_path, "-r", logdir, "-n", "other", "-t")
    with pytest.raises(SystemExit) as exit_info:  # -r without -t used to exit 0 having trained nothing
        _run(tmp_path, "-r", logdir)
    assert exit_info.value.code == 2
    assert "nothing to do: -t/--train was not given" in capsys.readouterr().err
    assert torch.load(os.path.join(logdir, "checkpoints", "last.ckpt"), weights_only=True)["global_step"] == 5
    with pytest.raises(SystemExit):  # a test split, but a model without test_step: nothing to run either
        _run(tmp_path, "data.params.test=${data.params.validation}", "--base", TOY_VQGAN)
    assert "VQModel has no test_step" in capsys.readouterr().err
    assert _single_run_dir(tmp_path) == logdir  # no run folder for it
    empty = tmp_path / "logs" / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="last.ckpt does not exist"):
        _run(tmp_path, "-r", str(empty), "-t")


def test_sigusr1_saves_last_checkpoint_mid_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.txt"
    args = ["--base", TOY_VQGAN, "-t", "--max_steps", "8", *FAST, "-n", "sig",
            "lightning.callbacks.sig.target=tests.helpers.SendSignalAt",
            "lightning.callbacks.sig.params.step=4",
            f"lightning.callbacks.sig.params.report_path={report}"]
    monkeypatch.setattr(cli, "_run_timestamp", lambda: "2030-01-01T00-00-00")
    ckpt = str(tmp_path / "logs" / "2030-01-01T00-00-00_sig" / "checkpoints" / "last.ckpt")
    _run(tmp_path, *args, f"lightning.callbacks.sig.params.ckpt_path={ckpt}")
    assert report.read_text() == "4"  # saved right after the signal, before training ended at 8
    assert torch.load(ckpt, weights_only=True)["global_step"] == 8


def test_name_postfix_debug_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_run_timestamp", lambda: "2030-01-01T00-00-00")
    trainer = _run(tmp_path, "--base", TOY_VQGAN, "-t", "--max_steps", "2", *FAST, "-d", "-n", "mine", "-f", "_x",
                   "model.params.n_embed=64")
    assert trainer.lightning_module.quantize.n_e == 64
    assert not os.path.exists(tmp_path / "logs" / "2030-01-01T00-00-00_mine_x")
    assert os.path.isdir(tmp_path / "logs" / "debug_runs" / "2030-01-01T00-00-00_mine_x" / "checkpoints")


def test_keys_the_config_leaves_to_the_command_line_are_named(tmp_path, monkeypatch, capsys):
    from tests.helpers import REPO

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # was an OmegaConf traceback from inside the model
        _run(tmp_path, "--base", os.path.join(REPO, "configs", "ilat_ffhq.yaml"), "-t")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ("leaves 2 key(s) for the command line: model.params.cond_stage_config.params.ckpt_path, "
            "model.params.first_stage_config.params.ckpt_path; give each as key=value") in err
    assert not os.path.exists(tmp_path / "logs")  # nothing written


def test_overrides_right_after_a_bool_flag_and_missing_data_leave_no_run(tmp_path, monkeypatch):
    from tests.helpers import REPO

    monkeypatch.chdir(tmp_path)
    # `-t key=value` used to fail with "boolean value expected"; the override must still apply
    trainer = _run(tmp_path, "--base", TOY_VQGAN, "-t", "model.params.n_embed=32", "--max_steps", "1", *FAST)
    assert trainer.lightning_module.quantize.n_e == 32 and trainer.global_step == 1
    parser = cli.get_parser()
    opt, unknown = parser.parse_known_args(cli._explicit_flag_values(parser, ["-t", "false", "--benchmark", "a=1"]))
    assert opt.train is False and opt.benchmark is True and unknown == ["a=1"]
    # the FFHQ configs' file lists are missing here: a clear error, and no empty run folder
    with pytest.raises(FileNotFoundError, match="data/ffhq_train.flist"):
        cli.main(["-l", str(tmp_path / "ffhq_logs"), "--base", os.path.join(REPO, "configs", "sketch_vqgan_ffhq.yaml"),
                  "-t"])
    assert not os.path.exists(tmp_path / "ffhq_logs")


def test_gpus_flag_and_legacy_trainer_keys():
    assert cli.parse_gpus("0,") == [0]
    assert cli.parse_gpus("0,1") == [0, 1]
    assert cli.parse_gpus("2") == 2
    with pytest.raises(ValueError, match="--gpus"):
        cli.parse_gpus("zero")
    opt, _ = cli.get_parser().parse_known_args(["--gpus", "0,", "--max_steps", "7", "--precision", "16-mixed"])
    from omegaconf import OmegaConf
    cfg = cli._build_trainer_config(opt, OmegaConf.create({"trainer": {"benchmark": True}}))
    assert cfg == {"benchmark": True, "accelerator": "gpu", "devices": [0], "max_steps": 7, "precision": "16-mixed"}
    opt, _ = cli.get_parser().parse_known_args([])
    assert cli._build_trainer_config(opt, OmegaConf.create({}))["accelerator"] == "cpu"
    legacy = OmegaConf.create({"trainer": {"gpus": "0,1", "distributed_backend": "ddp"}})
    cfg = cli._build_trainer_config(opt, legacy)
    assert cfg["devices"] == [0, 1] and cfg["accelerator"] == "gpu" and cfg["strategy"] == "ddp"
    assert cli._process_count(cfg) == 2
    with pytest.raises(ValueError, match="not Trainer arguments: \\['max_stepz'\\]"):
        cli._build_trainer_config(opt, OmegaConf.create({"trainer": {"max_stepz": 3}}))


def test_config_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="config file not found: .*missing.yaml"):
        _run(tmp_path, "--base", str(tmp_path / "missing.yaml"), "-t")
    with pytest.raises(KeyError, match="base_learning_rate"):
        _run(tmp_path, "--base", TOY_VQGAN, "-t", "--max_steps", "1", "model.base_learning_rate=null", *FAST)
    with pytest.raises(SystemExit):
        _run(tmp_path, "--base", TOY_VQGAN, "--max_stepz", "3")


def test_upstream_main_targets_resolve_to_the_port():
    from ilat_ext.callbacks import ImageLogger
    from ilat_ext.data import DataModuleFromConfig
    assert get_obj_from_str("main.DataModuleFromConfig") is DataModuleFromConfig
    assert get_obj_from_str("taming.main.ImageLogger") is ImageLogger
    assert get_obj_from_str("main.LearningRateMonitor").__name__ == "LearningRateMonitor"
    from ilat_ext.models import TamingTransformer, VQModel
    assert get_obj_from_str("taming.models.vqgan.VQModel") is VQModel
    assert get_obj_from_str("taming.models.cond_transformer.Net2NetTransformer") is TamingTransformer
    with pytest.raises(ImportError, match="no attribute 'Nope'"):
        get_obj_from_str("ilat_ext.models.Nope")
