"""Precision: every loss term and every metric computes in float32 under bf16 autocast (emulated with
CPU autocast, which casts the same ops), the trainer's step included; the effective precision is
recorded with the run, and a checkpoint is not resumed under another one."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from bench import precision, store
from bench.config import schema as config
from bench.config.schema import TrainSpec
from bench.errors import BenchError
from bench.metrics import quality as q
from bench.train.loop import make_optimizer, train, train_step
from bench.weights import files as weights
from losses import LOSSES, Objective
from models import MODELS, VAEOutput

SIZES = [32, 96]
WIDTHS = {32: [8, 16, 16], 96: [8, 16, 16, 16]}
# the pretrained networks some terms need, as small random ones planted where the weights store looks
PLANTED = {"lpips": ("alexnet", lambda: torchvision.models.alexnet(weights=None)),
           "deep_feature/vgg19": ("vgg19", lambda: torchvision.models.vgg19(weights=None))}


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def term_configs() -> list:
    """Every registered term, and every network choice of the deep-feature term (those that build a
    pretrained-size network, seconds each, run in the slow tier)."""
    out = [(name, {}) for name in LOSSES.names()] + [("deep_feature", {"network": "vgg19"})]
    return [pytest.param(c, marks=pytest.mark.slow) if _id(c) in PLANTED else c for c in out]


def _id(cfg) -> str:
    name, args = cfg
    return "/".join([name, *map(str, args.values())])


@pytest.fixture
def planted(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_DIR, str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def plant(key: str, module: torch.nn.Module) -> None:
        path = tmp_path / weights.FILES[key].filename
        torch.save(module.state_dict(), path)
        monkeypatch.setitem(weights.FILES, key, dataclasses.replace(weights.FILES[key],
                                                                    sha256=weights.sha256_file(path)))
    return plant


def _pair(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """8 images and a close reconstruction of each (the regime where SSIM's variance cancels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 3, size, size, generator=g)
    return x, (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cfg", term_configs(), ids=_id)
def test_every_term_computes_in_fp32_under_bf16_autocast(cfg, size, planted):
    name, args = cfg
    if (key := _id(cfg)) in PLANTED:
        torch.manual_seed(1)
        planted(PLANTED[key][0], PLANTED[key][1]())
    torch.manual_seed(0)
    model = MODELS.build("conv", {"image_size": size, "widths": WIDTHS[size], "latent_dim": 16})
    objective = Objective.from_config([{"name": name, **args}])
    x, r = _pair(size)
    g = torch.Generator().manual_seed(2)
    mu, lv = torch.randn(8, 16, generator=g), 0.1 * torch.randn(8, 16, generator=g)
    z = mu + torch.randn(8, 16, generator=g) * (0.5 * lv).exp()

    def value_and_grads(autocast: bool):
        inputs = [t.clone().requires_grad_(True) for t in (r, mu, lv)]
        with bf16() if autocast else precision.float32("cpu"):
            total, _ = objective(x, VAEOutput(*inputs, z), model, step=3)
        grads = torch.autograd.grad(total, inputs, allow_unused=True)
        return total.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]

    (v32, g32), (v16, g16) = value_and_grads(False), value_and_grads(True)
    assert v16.dtype == torch.float32
    torch.testing.assert_close(v16, v32, rtol=1e-6, atol=1e-6)
    for a, b in zip(g16, g32):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_bf16_reconstruction_is_scored_in_fp32():
    """The model's forward may stay in bf16: the term casts its output up, not the images down."""
    x, r = _pair(96)
    objective = Objective.from_config([{"name": "ms_ssim"}])
    out = VAEOutput(r.bfloat16(), *(torch.zeros(8, 4) for _ in range(3)))
    with bf16():
        got, _ = objective(x, out)
    want, _ = objective(x, out._replace(recon=r.bfloat16().float()))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_the_trainers_step_computes_its_objective_in_fp32_under_autocast():
    """train_step under CPU bf16 autocast: the forward runs in bf16, the returned objective equals the
    fp32 objective of the very output that forward produced."""
    torch.manual_seed(0)
    model = MODELS.build("conv", {"image_size": 96, "widths": WIDTHS[96], "latent_dim": 16})
    objective = Objective.from_config([{"name": "kl"}, {"name": "ssim"}, {"name": "colour"},
                                       {"name": "ms_ssim", "weight": 0.5}])
    seen = []
    model.register_forward_hook(lambda _m, _i, out: seen.append(VAEOutput(*(t.detach() for t in out))))
    cfg = TrainSpec(lr=1e-3)
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    x, _ = _pair(96)
    with bf16():
        total, terms = train_step(model, model, objective, opt, x, torch.Generator().manual_seed(1), 0, cfg,
                                  torch.device("cpu"))
    assert seen[0].recon.dtype == torch.bfloat16              # the model did run under autocast
    want, want_terms = objective(x, seen[0])
    torch.testing.assert_close(total.detach(), want, rtol=1e-6, atol=1e-6)
    for k, v in want_terms.items():
        torch.testing.assert_close(terms[k].detach(), v, rtol=1e-6, atol=1e-6)


METRICS = {
    "ssim_per_image": lambda x, y: q.ssim_per_image(x, y),
    "ms_ssim_per_image": lambda x, y: q.ms_ssim_per_image(x, y),
    "psnr_per_image": lambda x, y: q.psnr_per_image(x, y),
    "laplacian_variance": lambda x, _y: q.laplacian_variance(x),
    "chroma_error": lambda x, y: q.chroma_error(x, y),
    "pooled_colour_error": lambda x, y: q.pooled_colour_error(x, y),
    "srgb_to_lab": lambda x, _y: q.srgb_to_lab(x),
    "checkerboard_excess": lambda x, _y: q.checkerboard_excess(x),
    "radial_log_spectrum": lambda x, _y: q.radial_log_spectrum(x),
    "set_stats": lambda x, y: torch.tensor([q.sharpness_ratio(x, y), q.colour_distance(x, y),
                                            q.saturation_ratio(x, y), q.spectral_distance(x, y),
                                            q.checkerboard_score(x, y)]),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(METRICS))
def test_metrics_compute_in_fp32_under_bf16_autocast(name, size):
    x, y = _pair(size)
    want = METRICS[name](x, y)
    with bf16():
        got = METRICS[name](x, y)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_effective_precision_names_the_device():
    assert precision.effective(torch.device("cpu"), True) == "fp32"
    assert precision.effective(torch.device("cuda", 1), True) == "bf16 autocast (cuda)"
    assert precision.effective(torch.device("cuda"), False) == "fp32"


TINY = """\
name: tiny
question: is the precision recorded?
datasets: [shapes]
seeds: [0]
data:
  shapes: {n_train: 48, n_test: 16}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: ssim}]
  train: {steps: 4, batch_size: 16, log_every: 2, ckpt_every: 2}
  eval: {n_test: 16, n_samples: 16, batch_size: 16, sheet: 8, fidelity: false}
arms:
  ssim: {}
"""


def test_precision_is_recorded_and_a_switch_is_refused(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    run = config.expand(config.load(tmp_path / "tiny.yaml"))[0]
    from bench.run import execute
    out = execute.execute(run, tmp_path / "runs")
    assert out.state == "trained", out.message
    run_dir = tmp_path / "runs" / run.rel_dir
    assert store.read_json(run_dir / "env.json")["precision"] == "fp32"
    ck = torch.load(run_dir / store.CKPT, weights_only=False)
    assert ck["precision"] == "fp32"
    # the same checkpoint, as if it had been trained on a GPU under bf16 autocast
    ck["precision"], ck["step"] = "bf16 autocast (cuda)", 2
    store.torch_save(run_dir / store.CKPT, ck)
    with pytest.raises(BenchError, match=r"trained so far in bf16 autocast \(cuda\), this device would resume "
                                         r"it in fp32"):
        train(run, run_dir, progress=False)
