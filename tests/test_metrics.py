"""ilat_ext.metrics against brute-force references: PSNR (no +1 dB), MAE, SSIM (skimage), FID pieces."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from ilat_ext import metrics as M
from ilat_ext.data import ToyFaces


def _pair(seed=0, shape=(2, 3, 24, 28), noise=0.3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g, dtype=dtype) * 2 - 1
    return a, (a + noise * torch.randn(shape, generator=g, dtype=dtype)).clamp(-1, 1)


def test_psnr_matches_numpy_brute_force_whole_and_masked():
    a, b = _pair()
    mask = (torch.rand(2, 1, 24, 28, generator=torch.Generator().manual_seed(1)) > 0.6).double()
    for i in range(2):
        x, y, m = a[i].numpy(), b[i].numpy(), mask[i, 0].numpy().astype(bool)
        mse_all = np.mean((x - y) ** 2)
        mse_in = np.mean((x - y)[:, m] ** 2)  # masked pixels x channels
        assert M.psnr(a, b)[i].item() == pytest.approx(10 * np.log10(4.0 / mse_all), abs=1e-9)
        assert M.psnr(a, b, mask=mask)[i].item() == pytest.approx(10 * np.log10(4.0 / mse_in), abs=1e-9)
        assert M.mae(a, b)[i].item() == pytest.approx(np.mean(np.abs(x - y)) / 2.0, abs=1e-12)
        assert M.mae(a, b, mask=mask)[i].item() == pytest.approx(np.mean(np.abs(x - y)[:, m]) / 2.0, abs=1e-12)


def test_psnr_has_no_plus_one_db_defect_and_data_ranges_agree():
    """A uniform error of 0.1 on the [0, 1] scale is MSE 0.01 = 20 dB exactly (the release says 21)."""
    x01 = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 0.8
    y01 = x01 + 0.1
    assert M.psnr(x01, y01, data_range=1.0).item() == pytest.approx(20.0, abs=1e-9)
    assert M.psnr(x01 * 2 - 1, y01 * 2 - 1).item() == pytest.approx(20.0, abs=1e-9)   # [-1, 1], data_range 2
    assert M.mae(x01, y01, data_range=1.0).item() == pytest.approx(0.1, abs=1e-12)
    assert M.mae(x01 * 2 - 1, y01 * 2 - 1).item() == pytest.approx(0.1, abs=1e-12)


def test_identical_images_give_inf_and_empty_masks_nan():
    a, b = _pair(shape=(3, 3, 16, 16))
    assert torch.isinf(M.psnr(a, a)).all() and (M.psnr(a, a) > 0).all()
    mask = torch.ones(3, 1, 16, 16, dtype=torch.float64)
    mask[1] = 0                                                           # item 1: nothing to compare
    p, e = M.psnr(a, b, mask=mask), M.mae(a, b, mask=mask)
    assert torch.isnan(p[1]) and torch.isnan(e[1]) and torch.isfinite(p[[0, 2]]).all()
    assert M.format_metric(float("inf")) == "inf" and M.format_metric(float("nan")) == "nan"
    assert M.format_metric(None) == "n/a" and M.format_metric(12.3456, 2) == "12.35"
    with pytest.raises(ValueError, match="mask must be"):
        M.psnr(a, b, mask=torch.ones(3, 1, 8, 8))


def _sk_ssim(a, b, data_range):
    return [structural_similarity(a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy(),
                                  gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=data_range, channel_axis=-1) for i in range(a.shape[0])]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage_on_random_images(dtype):
    a, b = _pair(seed=3, shape=(2, 3, 23, 31), dtype=dtype)
    np.testing.assert_allclose(M.ssim(a, b).double().numpy(), _sk_ssim(a, b, 2.0), atol=1e-4)
    assert M.ssim(a, a).double().numpy() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_ssim_matches_skimage_on_structured_images_in_unit_range():
    """Toy faces in [0, 1] against a shifted, darkened and noisy copy (data_range 1)."""
    faces = torch.stack([torch.from_numpy(ToyFaces(size=64, length=2, mask=False)[i]["image"]) for i in range(2)])
    x = ((faces.permute(0, 3, 1, 2).double() + 1) / 2)
    y = (0.8 * torch.roll(x, shifts=2, dims=3) + 0.05 * torch.randn(x.shape, dtype=torch.float64)).clamp(0, 1)
    ours = M.ssim(x, y, data_range=1.0).numpy()
    np.testing.assert_allclose(ours, _sk_ssim(x, y, 1.0), atol=1e-4)
    assert 0.2 < ours.min() < 0.99                                        # a real, non-trivial value
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(x[:, :, :8, :8], y[:, :, :8, :8])


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    d1, d2 = rng.uniform(0.1, 2.0, 6), rng.uniform(0.1, 2.0, 6)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert M.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(closed, rel=1e-9, abs=1e-9)
    # identical statistics, full rank and singular (fewer samples than dimensions)
    f = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    assert abs(M.frechet_distance(*M.feature_statistics(f), *M.feature_statistics(f))) < 1e-6
    few = rng.normal(size=(4, 16))
    assert abs(M.frechet_distance(*M.feature_statistics(few), *M.feature_statistics(few))) < 1e-3
    with pytest.raises(ValueError, match="mismatched"):
        M.frechet_distance(mu1, np.diag(d1), mu2[:3], np.diag(d2[:3]))


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ILAT_EXT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


def test_fid_without_weights_names_every_searched_file(no_weights_anywhere):
    tmp = no_weights_anywhere
    assert M.find_inception_weights() is None
    assert M.find_inception_weights(str(tmp / "mine.pth")) is None
    with pytest.raises(M.InceptionWeightsNotFound) as err:
        M.fid(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), str(tmp / "given"))
    message = str(err.value)
    for folder in (tmp / "given", tmp / "weights", tmp / "home" / ".cache" / "ilat_ext", tmp / "hub" / "checkpoints"):
        for name in (M.PYTORCH_FID_INCEPTION, M.TORCHVISION_INCEPTION):
            assert str(folder / name) in message
    assert M.inception_candidates(str(tmp / "mine.pth"))[0] == str(tmp / "mine.pth")


def _he_state_dict(net, seed=0):
    """Random He-scaled weights (torchvision's own init makes 2048-d features overflow)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("weight") and v.dim() > 1:
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        elif k.endswith("running_var") or (k.endswith("weight") and v.dim() == 1):
            sd[k] = torch.ones(v.shape)
        else:
            sd[k] = torch.zeros(v.shape, dtype=v.dtype)
    return sd


@pytest.fixture(scope="module")
def weight_dirs(tmp_path_factory):
    """torchvision's layout (1000 classes, AuxLogits) and pytorch-fid's (1008 classes, no aux)."""
    from torchvision.models.inception import Inception3
    root = tmp_path_factory.mktemp("inception")
    (root / "tv").mkdir()
    (root / "fid").mkdir()
    tv = _he_state_dict(Inception3(num_classes=1000, aux_logits=True, init_weights=False))
    torch.save(tv, root / "tv" / M.TORCHVISION_INCEPTION)
    fid_sd = _he_state_dict(Inception3(num_classes=1008, aux_logits=False, init_weights=False), seed=1)
    torch.save(fid_sd, root / "fid" / M.PYTORCH_FID_INCEPTION)
    return root, tv


def test_inception_loads_torchvision_layout_and_identical_sets_give_zero_fid(weight_dirs, no_weights_anywhere,
                                                                              monkeypatch):
    root, tv = weight_dirs
    monkeypatch.setenv("ILAT_EXT_WEIGHTS_DIR", str(root / "tv"))
    path = M.find_inception_weights()
    assert path == str(root / "tv" / M.TORCHVISION_INCEPTION)
    model = M.load_inception(path, dims=64)
    assert model.variant == "torchvision"
    assert torch.equal(model.net.Mixed_7c.branch_pool.conv.weight, tv["Mixed_7c.branch_pool.conv.weight"])
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f64 = M.inception_features(images, model)
    assert f64.shape == (3, 64) and f64.dtype == torch.float64 and torch.isfinite(f64).all()
    assert abs(M.fid(images, images, model)) < 1e-3
    f2048 = M.inception_features(images[:2], path)                        # the default dims, from the file
    assert f2048.shape == (2, 2048) and torch.isfinite(f2048).all()
    # features of one image do not depend on the batch it is in
    torch.testing.assert_close(M.inception_features(images[:1], model), f64[:1], rtol=1e-4, atol=1e-5)


def test_inception_loads_pytorch_fid_layout_with_tensorflow_pooling(weight_dirs):
    root, _ = weight_dirs
    path = M.find_inception_weights(str(root / "fid"))
    assert path == str(root / "fid" / M.PYTORCH_FID_INCEPTION)
    model = M.load_inception(path, dims=64)
    assert model.variant == "pytorch-fid" and model.net.Mixed_7c.max_pool and not model.net.Mixed_7b.max_pool
    feats = M.inception_features(torch.zeros(2, 3, 40, 40), model)
    assert feats.shape == (2, 64) and torch.isfinite(feats).all()

    # The patched block differs from torchvision's only where the 3x3 average pool touches the padding.
    from torchvision.models.inception import InceptionA
    ours = model.net.Mixed_5b
    ref = InceptionA(192, pool_features=32).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(1, 192, 9, 9) + 0.5
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().amax(1)[0]                        # (9, 9)
    assert diff[1:-1, 1:-1].max() < 1e-5 and diff[0].min() > 1e-4 and diff[:, 0].min() > 1e-4


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 3 images, 64-dim features: singular by design
def test_compare_reports_fid_when_weights_are_found(weight_dirs, tmp_path):
    """The FID column through `ilat_ext.apps.compare`: an identity method scores ~0, a blurred copy more."""
    from ilat_ext.apps.compare import Method, batch_inputs, compare
    root, _ = weight_dirs

    def identity(batch):
        return batch_inputs(batch)[0]

    def blur(batch):
        return torch.nn.functional.avg_pool2d(batch_inputs(batch)[0], 5, stride=1, padding=2)

    rows = compare([Method("identity", identity), Method("blur", blur)],
                   ToyFaces(size=32, length=3, split="test", sketch=True), str(tmp_path), batch_size=3,
                   inception=str(root / "tv"), fid_dims=64, progress=False, verbose=False)
    assert abs(rows[0]["fid"]) < 1e-3 and rows[1]["fid"] > 1e-3 and rows[0]["fid_note"] is None
    assert rows[0]["psnr"] == float("inf") and rows[0]["ssim"] == pytest.approx(1.0)
