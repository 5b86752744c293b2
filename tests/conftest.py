"""Shared fixtures: no test may touch the network; fake perceptual-loss weight files; the two
backbones; a tiny model and an edit batch (built by tests/helpers.py)."""
import types

import pytest
import requests
import torch
import torchvision

from ilat_ext.modules.lpips import LIN_FILE, VGG16_FILE


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: args={args!r}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    # torchvision binds its own name at import time.
    import torchvision.models._api as tv_api
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse, raising=False)


@pytest.fixture(scope="session")
def fake_weights(tmp_path_factory):
    """A dir holding a torchvision-VGG16-shaped state_dict and a random LPIPS `vgg.pth`."""
    root = tmp_path_factory.mktemp("weights")
    g = torch.Generator().manual_seed(0)
    # Same keys and shapes as torchvision's file. Built on meta and filled by hand: the real
    # initialiser spends seconds on the 120M-parameter classifier, which LPIPS ignores.
    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    vgg_sd = {}
    for k, v in vgg.state_dict().items():
        if k.startswith("features.") and v.dim() == 4:
            fan_out = v.shape[0] * v.shape[2] * v.shape[3]
            vgg_sd[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_out) ** 0.5
        elif k.startswith("features."):
            vgg_sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        else:
            vgg_sd[k] = torch.zeros(v.shape)
    torch.save(vgg_sd, root / VGG16_FILE)
    lin_sd = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
              for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin_sd, root / LIN_FILE)
    return types.SimpleNamespace(dir=root, vgg=vgg_sd, lin=lin_sd)




@pytest.fixture(params=["gpt", "xtransformer"])
def backbone_name(request) -> str:
    """Both transformer backbones: `ilat_ext.modules.gpt.GPT` and `...xtransformer.XTransformer`."""
    return request.param


@pytest.fixture(scope="module")
def models():
    """Tiny models (`tests.helpers.tiny_ilat`), built once per module: models(cls=..., backbone=..., ...)."""
    from tests.helpers import tiny_ilat
    cache = {}

    def get(**kw):
        key = tuple(sorted((k, v if isinstance(v, (int, float, str)) else repr(v)) for k, v in kw.items()))
        if key not in cache:
            cache[key] = tiny_ilat(**kw)
        return cache[key]
    return get


@pytest.fixture(scope="module")
def batch():
    """`tests.helpers.dummy_edit_batch()`: x, sketch c and three masks (a block, two regions, empty)."""
    from tests.helpers import dummy_edit_batch
    return dummy_edit_batch()
