"""Loss terms and the objective: identities, references, the reduction convention, the grid."""
import math

import pytest
import pytorch_msssim
import torch

from bench.errors import ConfigError, WeightsError
from losses import LOSSES, Objective
from losses.ssim import ms_ssim_plan
from models import MODELS, VAEOutput

SIZES = [32, 96]
SMALL = {32: [8, 16, 16], 96: [8, 16, 16, 16]}
LATENT = 16
RECON = ["mse", "l1", "ssim", "ms_ssim", "colour", "deep_feature"]


def tiny(name: str, size: int):
    return MODELS.build(name, {"image_size": size, "widths": SMALL[size], "latent_dim": LATENT})


def as_out(recon: torch.Tensor, d: int = 4) -> VAEOutput:
    b = recon.shape[0]
    return VAEOutput(recon, torch.zeros(b, d), torch.zeros(b, d), torch.zeros(b, d))


def term(name: str, **args):
    return LOSSES.build(name, args)


def test_every_reconstruction_term_is_registered():
    assert set(RECON) | {"kl"} <= set(LOSSES.names())
    assert all(LOSSES.doc(n) for n in LOSSES.names())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", RECON)
def test_reconstruction_identity_and_difference(name, size):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 3, size, size, generator=g), torch.rand(3, 3, size, size, generator=g)
    model = tiny("paper", size)
    t = term(name)
    same, diff = t(x, as_out(x.clone()), model), t(x, as_out(y), model)
    assert same.shape == diff.shape == (3,)
    assert (diff > 0).all()
    assert same.abs().max() <= 1e-5 * diff.min()


def test_ssim_equals_pytorch_msssim_with_data_range_1():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g)
    r = (x + 0.1 * torch.randn(4, 3, 32, 32, generator=g)).clamp(0, 1)
    got = term("ssim")(x, as_out(r))
    ref = (1 - pytorch_msssim.ssim(r, x, data_range=1.0, size_average=False, win_size=11)) * 3 * 32 * 32
    torch.testing.assert_close(got, ref)
    wrong = (1 - pytorch_msssim.ssim(r, x, size_average=False)) * 3 * 32 * 32   # data_range=255
    assert not torch.allclose(got, wrong, rtol=1e-2)


def test_ssim_window_shrinks_to_fit_small_images():
    x = torch.rand(2, 3, 8, 8)
    r = x.flip(-1)
    ref = (1 - pytorch_msssim.ssim(r, x, data_range=1.0, size_average=False, win_size=7)) * 3 * 64
    torch.testing.assert_close(term("ssim")(x, as_out(r)), ref)


def test_ms_ssim_scale_rule_and_library_reference():
    assert [len(ms_ssim_plan(s, 11)[1]) for s in (32, 96, 256)] == [2, 4, 5]
    assert ms_ssim_plan(32, 7)[0] == 7 and len(ms_ssim_plan(32, 7)[1]) == 3
    assert all(abs(sum(ms_ssim_plan(s, 11)[1]) - 1) < 1e-9 for s in (32, 96))
    # where the library's own assertion holds (96 px, window 5 -> 5 scales), values agree
    win, weights = ms_ssim_plan(96, 5)
    assert (win, len(weights)) == (5, 5)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 96, 96, generator=g)
    r = (x + 0.05 * torch.randn(2, 3, 96, 96, generator=g)).clamp(0, 1)
    ref = pytorch_msssim.ms_ssim(r, x, data_range=1.0, size_average=False, win_size=5, weights=list(weights))
    torch.testing.assert_close(term("ms_ssim", win_size=5)(x, as_out(r)), (1 - ref) * 3 * 96 * 96)


def test_colour_matches_hand_computed_pooling():
    g = torch.Generator().manual_seed(3)
    x, r = torch.rand(2, 3, 6, 6, generator=g), torch.rand(2, 3, 6, 6, generator=g)
    pool = lambda im: im.reshape(2, 3, 3, 2, 3, 2).mean(dim=(3, 5))      # 3x3 grid of 2x2 means
    ref = ((pool(x) - pool(r)) ** 2).mean(dim=(1, 2, 3)) * 3 * 6 * 6
    torch.testing.assert_close(term("colour")(x, as_out(r)), ref)
    # colour ignores detail inside a pooled cell
    swapped = x.clone()
    swapped[..., 0:2, 0:2] = x[..., 0:2, 0:2].flip(-1)
    assert term("colour")(x, as_out(swapped)).abs().max() < 1e-5


def _kl_out(mu, logvar, generator=None):
    eps = torch.randn(mu.shape, generator=generator)
    return VAEOutput(torch.zeros(mu.shape[0], 3, 4, 4), mu, logvar, mu + eps * (0.5 * logvar).exp())


def test_kl_analytic():
    x = torch.zeros(2, 3, 4, 4)
    zero = _kl_out(torch.zeros(2, 5), torch.zeros(2, 5))
    assert torch.equal(term("kl")(x, zero), torch.zeros(2))
    ones = _kl_out(torch.ones(2, 5), torch.zeros(2, 5))                 # 0.5 * mu^2 per dim
    torch.testing.assert_close(term("kl")(x, ones), torch.full((2,), 2.5))
    lv = torch.full((2, 5), 1.0)                                         # 0.5 * (e - 2) per dim
    torch.testing.assert_close(term("kl")(x, _kl_out(torch.zeros(2, 5), lv)),
                               torch.full((2,), 2.5 * (torch.e - 2)))


def test_kl_mc_is_unbiased_for_analytic():
    g = torch.Generator().manual_seed(4)
    n, d = 20000, 6
    mu = torch.randn(1, d, generator=g).expand(n, d)
    lv = (0.5 * torch.randn(1, d, generator=g)).expand(n, d)
    out = _kl_out(mu, lv, g)
    x = torch.zeros(n, 3, 4, 4)
    mc, analytic = term("kl", estimator="mc")(x, out), term("kl")(x, out)
    se = mc.std() / n ** 0.5
    assert (mc.mean() - analytic[0]).abs() < 4 * se
    assert mc.std() > 0.1                                                # it really is a sample


def test_kl_warmup():
    x = torch.zeros(2, 3, 4, 4)
    out = _kl_out(torch.ones(2, 5), torch.zeros(2, 5))
    t = term("kl", warmup_steps=10)
    full = term("kl")(x, out)
    assert torch.equal(t(x, out, step=0), torch.zeros(2))
    torch.testing.assert_close(t(x, out, step=5), 0.5 * full)
    torch.testing.assert_close(t(x, out, step=10), full)
    torch.testing.assert_close(t(x, out, step=1000), full)


def test_kl_free_bits_floors_the_batch_mean_per_dimension():
    x = torch.zeros(4, 3, 4, 4)
    mu = torch.zeros(4, 3, requires_grad=True)
    with torch.no_grad():
        mu[:, 0] = 2.0                      # dim 0: KL 2.0 per image (above the floor)
        mu[:, 1] = torch.tensor([0.0, 0.0, 0.0, 0.6])   # dim 1: batch-mean KL 0.045 (below)
    out = _kl_out(mu, torch.zeros(4, 3))
    v = term("kl", free_bits=0.5)(x, out)
    assert v.shape == (4,)
    torch.testing.assert_close(v.mean(), torch.tensor(2.0 + 0.5 + 0.5))  # sum_d max(mean_b KL_bd, 0.5)
    v.mean().backward()
    assert mu.grad[:, 0].abs().sum() > 0 and mu.grad[:, 1:].abs().sum() == 0
    with pytest.raises(ConfigError):
        Objective.from_config([{"name": "kl", "free_bits": -1.0}])


def test_objective_is_the_weighted_sum_of_its_terms():
    g = torch.Generator().manual_seed(5)
    x, r = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    out = VAEOutput(r, torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), torch.zeros(3, 8))
    obj = Objective.from_config([{"name": "mse", "weight": 0.5}, {"name": "kl", "weight": 2.0},
                                 {"name": "ssim"}, {"name": "mse", "weight": 3}])
    total, terms = obj(x, out)
    assert list(terms) == ["mse", "kl", "ssim", "mse_2"]
    assert total.shape == ()
    torch.testing.assert_close(
        total, 0.5 * terms["mse"] + 2 * terms["kl"] + terms["ssim"] + 3 * terms["mse_2"])
    mse, kl, ssim = (term(n)(x, out) for n in ("mse", "kl", "ssim"))
    per_image = 0.5 * mse + 2 * kl + ssim + 3 * mse
    torch.testing.assert_close(total, per_image.mean())


def test_config_errors_are_keyed_by_entry():
    with pytest.raises(ConfigError, match="did you mean 'ssim'") as exc:
        Objective.from_config([{"name": "kl"}, {"name": "ssmi"}])
    assert exc.value.key == "loss[1].name"
    with pytest.raises(ConfigError, match="did you mean 'warmup_steps'") as exc:
        Objective.from_config([{"name": "kl", "warmup_step": 10}])
    assert exc.value.key == "loss[0].warmup_step"
    with pytest.raises(ConfigError, match="odd"):
        Objective.from_config([{"name": "ssim", "win_size": 8}])
    with pytest.raises(ConfigError) as exc:
        Objective.from_config([{"name": "mse", "weight": "x"}])
    assert exc.value.key == "loss[0].weight"
    entry = {"name": "kl", "weight": 2.0}
    Objective.from_config([entry])
    assert entry == {"name": "kl", "weight": 2.0}                      # caller's dict untouched


def test_deep_feature_vgg19_needs_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("PEGASUS_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))                 # an empty hub cache
    with pytest.raises(WeightsError, match="vgg19"):
        Objective.from_config([{"name": "deep_feature", "network": "vgg19"}])


def test_deep_feature_freezes_the_encoder():
    """The feature extractor's weights get no gradient from this term; recon does (and, through
    the decoder and z, the model's main path)."""
    model = tiny("paper", 32).train()
    x = torch.rand(4, 3, 32, 32)
    recon = model(x).recon.detach().requires_grad_(True)            # cut the model's own path
    stats = [b.clone() for b in model.buffers()]
    v = term("deep_feature")(x, as_out(recon), model)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))   # BN stats untouched
    v.sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert recon.grad.abs().sum() > 0
    out = model(x)                                                  # the normal, connected case
    term("deep_feature")(x, out, model).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    with pytest.raises(ValueError, match="needs the model"):
        term("deep_feature")(x, out)


def _buildable_losses():
    names = []
    for name in LOSSES.names():
        try:
            LOSSES.build(name, {})
        except WeightsError:
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("model_name", MODELS.names())
def test_every_model_trains_with_every_loss(model_name, size):
    torch.manual_seed(0)
    model = tiny(model_name, size)
    x = torch.rand(2, 3, size, size)
    for loss_name in _buildable_losses():
        obj = Objective.from_config([{"name": loss_name}])
        model.zero_grad(set_to_none=True)
        total, terms = obj(x, model(x, generator=torch.Generator().manual_seed(0)), model, step=1)
        total.backward()
        assert torch.isfinite(total), (loss_name, total)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads, loss_name
        assert all(torch.isfinite(g).all() for g in grads), loss_name


def test_optimal_sigma_is_the_gaussian_nll_at_the_batch_mse():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 32, 32, generator=g)
    r = (x + 0.1 * torch.randn(4, 3, 32, 32, generator=g)).clamp(0, 1).requires_grad_(True)
    got = term("gaussian_optimal_sigma")(x, as_out(r))
    var = (r - x).square().mean().detach()
    ref = -torch.distributions.Normal(r, var.sqrt()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-2)
    # the optimum: a shared sigma other than sqrt(batch MSE) gives a larger batch NLL
    for s in (0.5, 2.0):
        other = -torch.distributions.Normal(r, s * var.sqrt()).log_prob(x).flatten(1).sum(1)
        assert other.sum() > got.sum()
    # its gradient is MSE's scaled by 1 / (2 sigma^2): an effective reconstruction weight
    (g_sigma,) = torch.autograd.grad(got.sum(), r)
    (g_mse,) = torch.autograd.grad(term("mse")(x, as_out(r)).sum(), r)
    torch.testing.assert_close(g_sigma, g_mse / (2 * var))


def test_optimal_sigma_floor_keeps_a_perfect_reconstruction_finite():
    x = torch.rand(2, 3, 8, 8)
    got = term("gaussian_optimal_sigma", min_sigma=0.01)(x, as_out(x.clone()))
    torch.testing.assert_close(got, torch.full((2,), 0.5 * 3 * 64 * math.log(2 * math.pi * 1e-4)))
    with pytest.raises(ConfigError, match="greater than 0"):
        Objective.from_config([{"name": "gaussian_optimal_sigma", "min_sigma": 0}])
