"""ilat_ext.checkpoint: the safe loader refuses pickled code and still reads public taming
checkpoints; key reporting is exact; Lightning saves are atomic and resumes go through the loader.

Every refusal test also checks that the payload did not run, and `test_unsafe_opt_in_runs_payload`
shows that the same payload does run when it is allowed to, so these tests can fail.
"""
import builtins
import copyreg
import os
import pickle

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ilat_ext.checkpoint as ckpt_mod
from ilat_ext.checkpoint import (CheckpointKeysWarning, LoadReport, SafeCheckpointIO, UnsafeCheckpointError, UpstreamClassRef,
                                 atomic_save, load_checkpoint, load_state_dict_report)

MODEL_CHECKPOINT = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


class _Reduce:
    """Pickles as the call `func(*args)`, which is how a malicious checkpoint runs code."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _NewObjModelCheckpoint:
    """Pickles as NEWOBJ `ModelCheckpoint.__new__(ModelCheckpoint, "x")` (pickle checks `__class__`)."""

    __class__ = property(lambda self: ModelCheckpoint)

    def __reduce__(self):
        return copyreg.__newobj__, (ModelCheckpoint, "x")


def _exec_payload(marker):
    return _Reduce(builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",))


def _public_taming_layout():
    """What a Lightning 1.0.8 run (taming's public VQGAN files) saves, in miniature."""
    state_dict = {"encoder.conv_in.weight": torch.randn(4, 3, 3, 3), "quantize.embedding.weight": torch.randn(8, 4),
                  "loss.discriminator.main.0.bias": torch.randn(4)}
    return {
        "state_dict": state_dict, "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
        "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(4, 3, 3, 3), "step": 10}},
                              "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9), "params": [0]}]}],
        "lr_schedulers": [],
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(1.0), "best_model_path": "x"}},
    }


@pytest.fixture(autouse=True)
def _no_torch_env_override(monkeypatch):
    # TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 would silently turn the unsafe=True tests into safe loads.
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    before = set(torch.serialization.get_safe_globals())
    yield
    # Placeholders are allowlisted for one load only, even when that load fails.
    assert set(torch.serialization.get_safe_globals()) == before


# --- refusing pickled code ---------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_exec_payload_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    evil = _public_taming_layout()  # a trojaned public checkpoint: an allowed class name plus exec
    evil["state_dict"]["w"] = _exec_payload(marker)
    torch.save(evil, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError, match=r"references builtins\.exec") as err:  # refused before loading
        load_checkpoint(path)
    assert str(path) in str(err.value) and "--unsafe-load" in str(err.value) and "unsafe=True" in str(err.value)
    assert not marker.exists()


def test_os_system_payload_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": _Reduce(os.system, (f"touch {marker}",))}}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|nt\.system"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload, verb", [
    (_Reduce(ModelCheckpoint, ("somewhere",)), "call"),  # REDUCE through the allowed name
    (_NewObjModelCheckpoint(), "instantiate"),           # NEWOBJ through the allowed name
], ids=["reduce", "newobj"])
def test_payload_through_allowed_class_name_refused(tmp_path, payload, verb):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": payload}}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == [MODEL_CHECKPOINT]  # passes the scan
    with pytest.raises(UnsafeCheckpointError, match=f"tries to {verb} {MODEL_CHECKPOINT}"):
        load_checkpoint(path)


def test_placeholder_is_inert():
    ref = UpstreamClassRef(MODEL_CHECKPOINT)
    with pytest.raises(UnsafeCheckpointError):
        ref("dirpath")
    with pytest.raises(UnsafeCheckpointError):
        ref.__new__(ref)  # what the weights-only unpickler does for NEWOBJ
    assert ref == UpstreamClassRef(MODEL_CHECKPOINT) and hash(ref) == hash(UpstreamClassRef(MODEL_CHECKPOINT))


def test_unsafe_opt_in_runs_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": _exec_payload(marker)}}, path)
    with pytest.warns(UserWarning, match="execute arbitrary code"):
        load_checkpoint(path, unsafe=True)
    assert marker.exists()


def test_process_default_unsafe(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": _exec_payload(marker)}}, path)
    try:
        ckpt_mod.set_default_unsafe(True)
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint(path, unsafe=False)  # an explicit False wins over the process default
        assert not marker.exists()
        with pytest.warns(UserWarning, match="execute arbitrary code"):
            load_checkpoint(path)
        assert marker.exists()
    finally:
        ckpt_mod.set_default_unsafe(False)


# --- reading what we must read ----------------------------------------------------------------

def test_public_taming_layout_loads_safely(tmp_path):
    path = tmp_path / "last.ckpt"
    original = _public_taming_layout()
    torch.save(original, path)
    with pytest.raises(pickle.UnpicklingError, match="ModelCheckpoint"):
        torch.load(path, weights_only=True)

    loaded = load_checkpoint(path)
    assert set(loaded) == set(original)
    assert loaded["state_dict"].keys() == original["state_dict"].keys()
    for key, tensor in original["state_dict"].items():
        assert loaded["state_dict"][key].dtype == tensor.dtype and torch.equal(loaded["state_dict"][key], tensor)
    optimizer, original_optimizer = loaded["optimizer_states"][0], original["optimizer_states"][0]
    assert torch.equal(optimizer["state"][0]["exp_avg"], original_optimizer["state"][0]["exp_avg"])
    assert optimizer["param_groups"] == original_optimizer["param_groups"]
    assert (loaded["epoch"], loaded["global_step"], loaded["pytorch-lightning_version"]) == (3, 1000, "1.0.8")

    (key,) = loaded["callbacks"]
    assert key == UpstreamClassRef(MODEL_CHECKPOINT) and key is not ModelCheckpoint
    assert MODEL_CHECKPOINT in str(key) and MODEL_CHECKPOINT in repr(key)
    assert loaded["callbacks"][key]["best_model_path"] == "x"
    assert torch.equal(loaded["callbacks"][key]["best_model_score"], torch.tensor(1.0))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_bare_state_dict_is_wrapped(tmp_path, legacy):
    path = tmp_path / "weights.pt"
    state_dict = nn.Linear(2, 3).state_dict()
    torch.save(state_dict, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_checkpoint(path)
    assert list(loaded) == ["state_dict"]
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in state_dict.items())


def test_not_a_file(tmp_path):
    missing = tmp_path / "nope" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_checkpoint(missing)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_corrupt_files_name_the_path(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, good)
    truncated, junk = tmp_path / "truncated.ckpt", tmp_path / "junk.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk.write_bytes(b"hello world, not a checkpoint")
    for path in (truncated, junk):
        with pytest.raises(RuntimeError, match=str(path)):
            load_checkpoint(path)


# --- Lightning: atomic saves, resuming through the safe loader --------------------------------

class _TinyModule(pl.LightningModule):
    def __init__(self, width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(16, self.hparams.width)), batch_size=2)


def _trainer(tmp_path, max_steps):
    return pl.Trainer(max_steps=max_steps, default_root_dir=tmp_path, enable_progress_bar=False, logger=False,
                      enable_model_summary=False, accelerator="cpu", devices=1, plugins=[SafeCheckpointIO()])


def test_lightning_checkpoint_saves_atomically_and_resumes_safely(tmp_path, monkeypatch):
    saves, loads = [], []
    real_atomic_save, real_load = ckpt_mod.atomic_save, ckpt_mod.load_checkpoint

    def spy_save(obj, path):
        saves.append(str(path))
        real_atomic_save(obj, path)

    def spy_load(path, **kwargs):
        loads.append((str(path), kwargs))
        return real_load(path, **kwargs)

    monkeypatch.setattr(ckpt_mod, "atomic_save", spy_save)
    monkeypatch.setattr(ckpt_mod, "load_checkpoint", spy_load)

    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(_TinyModule())
    path = tmp_path / "step2.ckpt"
    trainer.save_checkpoint(path)
    assert str(path) in saves and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    checkpoint = real_load(path)
    assert checkpoint["global_step"] == 2 and checkpoint["hyper_parameters"] == {"width": 4}

    resumed = _trainer(tmp_path, max_steps=4)
    resumed.fit(_TinyModule(), ckpt_path=str(path))
    assert loads == [(str(path), {"unsafe": False, "map_location": "cpu"})]
    assert resumed.global_step == 4


def test_resume_refuses_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(_TinyModule())
    trainer.save_checkpoint(path)
    evil = torch.load(path, weights_only=True)
    evil["loops"]["evil"] = _exec_payload(marker)
    torch.save(evil, path)
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        _trainer(tmp_path, max_steps=2).fit(_TinyModule(), ckpt_path=str(path))
    assert not marker.exists()


def test_atomic_save_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.zeros(3)}, "global_step": 1}, path)
    old_bytes = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)  # what a crash mid-write leaves behind
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 2}, path)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"w": torch.ones(3)}, tmp_path / "new.ckpt")
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]  # no temp files, no half-written new.ckpt
    assert path.read_bytes() == old_bytes and load_checkpoint(path)["global_step"] == 1


# --- load_state_dict_report -------------------------------------------------------------------

class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3))
        self.decoder = nn.Linear(3, 2)
        self.loss = nn.Module()
        self.loss.perceptual_loss = nn.Linear(2, 2)


def _checkpoint_for_net():
    """Source weights for `_Net`: decoder.bias missing, two unexpected keys, a different `loss`."""
    state_dict = {k: torch.randn_like(v) for k, v in _Net().state_dict().items()}
    del state_dict["decoder.bias"]
    state_dict["extra.a"], state_dict["extra.b"] = torch.zeros(1), torch.zeros(1)
    state_dict["loss.discriminator.weight"] = torch.zeros(5, 5)
    return state_dict


def test_report_is_exact_and_input_untouched(capsys):
    net, state_dict = _Net(), _checkpoint_for_net()
    before = dict(state_dict)
    loss_weight = net.loss.perceptual_loss.weight.detach().clone()

    with pytest.warns(CheckpointKeysWarning) as caught:   # missing / unexpected keys: never unseen
        report = load_state_dict_report(net, state_dict, ignore_keys=("loss",), source="vqgan.ckpt")

    assert isinstance(report, LoadReport)
    assert report.missing == ["decoder.bias"]  # loss.* model keys are ignored, not missing
    assert sorted(report.unexpected) == ["extra.a", "extra.b"]
    assert sorted(report.ignored) == ["loss.discriminator.weight", "loss.perceptual_loss.bias",
                                      "loss.perceptual_loss.weight"]
    assert report.loaded == 5
    assert state_dict.keys() == before.keys() and all(state_dict[k] is v for k, v in before.items())
    assert torch.equal(net.encoder[0].weight, state_dict["encoder.0.weight"])
    assert torch.equal(net.loss.perceptual_loss.weight, loss_weight)  # ignored subtree keeps its init

    assert capsys.readouterr().out == ""              # the library reports through warnings, not print
    printed = str(caught[0].message)
    assert len(caught) == 1 and printed.strip() == report.summary()
    assert "vqgan.ckpt: 5 loaded, 1 missing, 2 unexpected, 3 ignored" in printed
    assert "extra.*: 2 keys" in printed and "loss.perceptual_loss.*: 2 keys" in printed
    assert "loss.discriminator.weight" in printed and "decoder.bias" in printed


def test_report_strict_raises_with_key_names():
    with pytest.raises(RuntimeError, match=r"decoder\.bias.*extra\.a"):
        load_state_dict_report(_Net(), _checkpoint_for_net(), ignore_keys=("loss",), strict=True)
    net = _Net()
    full = {k: v.clone() for k, v in net.state_dict().items()}
    assert load_state_dict_report(net, full, strict=True) == LoadReport([], [], [], loaded=len(full))


def test_report_shape_mismatch_names_key_and_shapes():
    net = _Net()
    state_dict = {k: v.clone() + 1 for k, v in net.state_dict().items()}
    state_dict["decoder.weight"] = torch.zeros(4, 3)
    untouched = net.encoder[0].weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"decoder\.weight: checkpoint \(4, 3\) vs model \(2, 3\)") as err:
        load_state_dict_report(net, state_dict, source="model.ckpt")
    assert "model.ckpt" in str(err.value)
    assert torch.equal(net.encoder[0].weight, untouched)  # nothing was copied
