"""TamingTransformer (Lightning-2 Net2NetTransformer): training, frozen stages, param groups, loading."""
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ilat_ext.data import ToyFaces
from ilat_ext.models import TamingTransformer, transformer_param_groups
from tests.helpers import tiny_ddconfig

VOCAB = 32


def _config(cond="__is_unconditional__", **kw):
    first_stage = {"target": "ilat_ext.models.VQModel",
                   "params": {"ddconfig": tiny_ddconfig(ch_mult=(1, 2, 2, 2)), "n_embed": VOCAB, "embed_dim": 8,
                              "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"}}}
    transformer = {"target": "taming.modules.transformer.mingpt.GPT",
                   "params": {"vocab_size": VOCAB, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}}
    return dict(transformer_config=transformer, first_stage_config=first_stage, cond_stage_config=cond,
                first_stage_key="image", **kw)


def _model(**kw):
    torch.manual_seed(0)
    return TamingTransformer(**_config(**kw), learning_rate=1e-3)


def test_trains_under_lightning2_with_frozen_first_stage():
    model = _model()
    first0 = {k: v.clone() for k, v in model.first_stage_model.state_dict().items()}
    gpt0 = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    assert not any(p.requires_grad for p in model.first_stage_model.parameters())
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(ToyFaces(size=32, length=16, mask=False), batch_size=4))
    assert trainer.global_step == 3
    assert not model.first_stage_model.training  # Lightning's model.train() cannot unfreeze it
    assert all(torch.equal(first0[k], v) for k, v in model.first_stage_model.state_dict().items())
    assert any(not torch.equal(gpt0[k], v) for k, v in model.transformer.state_dict().items())
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])


def test_param_groups_cover_every_parameter_once():
    model = _model()
    groups = transformer_param_groups(model.transformer, 0.01)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    named = dict(model.transformer.named_parameters())
    assert decay.isdisjoint(no_decay)
    assert decay | no_decay == {id(p) for p in named.values()}
    assert id(named["pos_emb"]) in no_decay and id(named["ln_f.weight"]) in no_decay
    assert id(named["blocks.0.attn.key.bias"]) in no_decay
    assert id(named["blocks.0.attn.key.weight"]) in decay and id(named["head.weight"]) in decay
    opt = model.configure_optimizers()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0] and opt.defaults["betas"] == (0.9, 0.95)


def test_init_from_ckpt_with_matching_ignore_keys_reports_instead_of_crashing(tmp_path):
    source = _model()
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    torch.manual_seed(1)
    target = TamingTransformer(**_config(ckpt_path=str(path), ignore_keys=["first_stage_model"]), learning_rate=1e-3)
    report = target.ckpt_load_report
    assert report.ignored and all(k.startswith("first_stage_model.") for k in report.ignored)
    assert report.missing == sorted(report.missing) and all(k.startswith("first_stage_model.") for k in report.missing)
    assert report.unexpected == []
    for k, v in source.transformer.state_dict().items():
        assert torch.equal(v, target.transformer.state_dict()[k])


def test_first_stage_as_condition_and_upstream_sampler():
    """The first stage as condition stage; upstream's greedy sampler (no cache) emits the argmax of
    the teacher-forced logits of its own output at every position."""
    model = _model(cond="__is_first_stage__", cond_stage_key="image").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    logits, target = model(x, x)
    assert logits.shape == (2, 16, VOCAB) and target.shape == (2, 16)
    _, c = model.encode_to_c(x)
    out = model.sample(torch.zeros(2, 0, dtype=torch.long), c, steps=16, sample=False)
    assert out.shape == (2, 16) and out.max() < VOCAB
    # greedy: every token is the argmax of one teacher-forced pass over the result (up to round-off)
    with torch.no_grad():
        logits, _ = model.forward_tokens(out, c)                                    # (B, 16, V)
    chosen = logits.gather(-1, out[..., None])[..., 0]
    assert (chosen >= logits.amax(-1) - 1e-5).all()
    assert (logits.amax(-1) - logits.topk(2, dim=-1).values[..., 1] > 1e-3).float().mean() > 0.5   # no tie-fest


def test_unconditional_uses_sos_token():
    model = _model(sos_token=7)
    _, c = model.encode_to_c(torch.zeros(3, 3, 32, 32))
    assert c.tolist() == [[7]] * 3
