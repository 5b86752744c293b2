"""Checkpoints written before issue 25's restructuring (commit 238586b) still load, and compute
what they computed then.

`tests/fixtures/pre_refactor/layouts.pt` holds, for every shipped model config (shrunk), the state
dict layout the code of 238586b built (keys, shapes, dtypes) and its outputs on fixed inputs with
values filled from the key names. Here each checkpoint is rebuilt from that layout, loaded through
the safe loader into today's model with no missing or unexpected key, and must reproduce every
recorded output.
"""
import os

import pytest
import torch

from ilat_ext import load_checkpoint, load_state_dict_report
from ilat_ext.util import instantiate_from_config
from tests.fixtures.pre_refactor.make_fixtures import fill_state, init_fingerprint, record

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pre_refactor")
FIXTURES = torch.load(os.path.join(HERE, "layouts.pt"), weights_only=True)


def assert_same(actual, expected, where):
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor) and expected.is_floating_point():
        # The pose models' training loss (poses warped and rasterised before the transformer) moved
        # by 2.3e-4 relative between the install that recorded it and a fresh one of 2026-12-02,
        # with the same torch and the same code (f383c50 reproduces it), while every tensor output
        # still agrees within 1e-5; a scalar loss therefore gets 1e-3 (a changed model moves it more).
        tol = 1e-3 if where.endswith(".loss") else 1e-5
        torch.testing.assert_close(actual, expected, rtol=tol, atol=1e-5, msg=lambda m: f"{where}: {m}")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(torch.as_tensor(actual), expected), where
    else:
        assert actual == expected, where


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_pre_refactor_checkpoint_loads_and_computes_the_same(name, tmp_path):
    fixture = FIXTURES[name]
    path = tmp_path / f"{name}.ckpt"
    torch.save({"state_dict": fill_state(fixture["layout"], fixture["verbatim"]), "global_step": 7, "epoch": 0},
               path)
    torch.manual_seed(0)
    model = instantiate_from_config(fixture["config"]).eval()
    # the same random initialisation as then: a run started from the same seed trains the same
    assert init_fingerprint(model) == fixture["init"]
    report = load_state_dict_report(model, load_checkpoint(str(path))["state_dict"], strict=True, source=str(path))
    assert report.missing == [] and report.unexpected == []
    assert_same(record(name, model), fixture["expected"], name)
