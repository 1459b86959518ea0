"""models/layers.py: the CPU passes of Conv2d / ConvTranspose2d as GEMMs (forward, input gradient,
weight gradient) equal torch's (in float64, where the different summation order is invisible), for
every geometry the models use and some they do not; whole models get the same gradients with and
without them; and each pass takes the GEMM exactly where the measured rules say."""
import itertools

import pytest
import torch
from torch import nn

from models import MODELS, layers


@pytest.fixture(autouse=True)
def _float64_small_layers(monkeypatch):
    """Every tensor and layer of these tests is float64, and every layer takes the GEMM for all three
    passes, whatever its channels and map size (the channel floor and the small-map rule are speed
    choices, tested on their own below)."""
    monkeypatch.setattr(layers, "GEMM_MIN_CHANNELS", 1)
    monkeypatch.setattr(layers, "GEMM_MAX_MAP", 10**6)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


CL = torch.channels_last
GEOMETRIES = [  # (kernel, stride, padding, output_padding) — the paper's k4/s2/p0 first
    (4, 2, 0, 0), (4, 2, 0, 1), (3, 2, 0, 1), (3, 1, 1, 0), (1, 1, 0, 0), (4, 2, 1, 0), (4, 2, 1, 1),
    ((3, 4), (2, 1), (1, 0), (1, 0)),
]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _compare(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    ref.load_state_dict(ours.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    assert ya.stride() == yb.stride()               # the same memory format out
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)
    for (name, pa), pb in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10, atol=1e-10, msg=name)
        assert pa.grad.shape == pa.shape


@pytest.mark.parametrize("geometry,bias,fmt", list(itertools.product(GEOMETRIES, [True, False], ["cl", "nchw"])))
def test_conv_weight_grad_equals_torch(geometry, bias, fmt):
    k, s, p, _ = geometry
    torch.manual_seed(0)
    ours, ref = layers.Conv2d(5, 7, k, s, p, bias=bias), nn.Conv2d(5, 7, k, s, p, bias=bias)
    x = torch.randn(3, 5, 13, 11)
    if fmt == "cl":
        ours, ref, x = ours.to(memory_format=CL), ref.to(memory_format=CL), x.contiguous(memory_format=CL)
    _compare(ours, ref, x)


@pytest.mark.parametrize("geometry,bias,fmt", list(itertools.product(GEOMETRIES, [True, False], ["cl", "nchw"])))
def test_conv_transpose_weight_grad_equals_torch(geometry, bias, fmt):
    k, s, p, op = geometry
    if any(o >= max(st, 1) for o, st in zip(_pair(op), _pair(s))):
        pytest.skip("output_padding must be smaller than the stride")
    torch.manual_seed(0)
    args = (5, 7, k, s, p, op)
    ours, ref = layers.ConvTranspose2d(*args, bias=bias), nn.ConvTranspose2d(*args, bias=bias)
    x = torch.randn(3, 5, 6, 9)
    if fmt == "cl":
        ours, ref, x = ours.to(memory_format=CL), ref.to(memory_format=CL), x.contiguous(memory_format=CL)
    _compare(ours, ref, x)


def test_the_gemm_computes_the_weight_gradient_and_only_when_it_can(monkeypatch):
    calls = []
    real = layers.conv_weight_grad
    monkeypatch.setattr(layers, "conv_weight_grad", lambda *a: calls.append(1) or real(*a))
    conv, x = layers.Conv2d(3, 4, 4, 2), torch.randn(2, 3, 10, 10)
    conv(x).sum().backward()
    assert calls == [1]
    with torch.no_grad():                    # no gradient wanted: torch's layer, no autograd.Function
        conv(x)
    layers.Conv2d(4, 4, 3, groups=2)(torch.randn(1, 4, 6, 6)).sum().backward()      # groups: torch's path
    monkeypatch.setattr(layers, "GEMM_CONVS", False)
    conv(x).sum().backward()
    assert calls == [1]


def test_layers_with_few_channels_keep_torchs_weight_gradient(monkeypatch):
    calls = []
    real = layers.conv_transpose_weight_grad
    monkeypatch.setattr(layers, "conv_transpose_weight_grad", lambda *a: calls.append(a[0].shape[1]) or real(*a))
    monkeypatch.setattr(layers, "GEMM_MIN_CHANNELS", 64)
    for c_in, c_out in ((64, 3), (32, 64), (64, 64), (128, 64)):
        layers.ConvTranspose2d(c_in, c_out, 4, 2)(torch.randn(2, c_in, 3, 3)).sum().backward()
    assert calls == [64, 128]


@pytest.mark.parametrize("transposed", [False, True])
def test_forward_and_input_gradient_take_the_gemm_only_on_small_maps_of_strided_layers(transposed, monkeypatch):
    monkeypatch.setattr(layers, "GEMM_MIN_CHANNELS", 64)
    monkeypatch.setattr(layers, "GEMM_MAX_MAP", 4)
    calls = []
    for name in ("conv_gemm", "conv_transpose_gemm"):
        real = getattr(layers, name)
        monkeypatch.setattr(layers, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    layer_type = layers.ConvTranspose2d if transposed else layers.Conv2d
    fwd, back = ("conv_transpose_gemm", "conv_gemm") if transposed else ("conv_gemm", "conv_transpose_gemm")

    def passes(c_in, c_out, k, s, p, side):
        calls.clear()
        x = torch.randn(2, c_in, side, side, requires_grad=True)
        layer_type(c_in, c_out, k, s, p)(x).sum().backward()
        return list(calls)

    # the 32 px paper model's bottleneck layer (6 -> 2, or 2 -> 6 transposed): both passes
    assert passes(64, 64, 4, 2, 0, 2 if transposed else 6) == [fwd, back]
    # a side of 6 at both ends, a stride-1 layer on a 2 x 2 map, too few channels: oneDNN
    assert passes(64, 64, 4, 2, 0, 6 if transposed else 15) == []
    assert passes(64, 64, 3, 1, 1, 2) == []
    assert passes(32, 64, 4, 2, 0, 2 if transposed else 6) == []
    with torch.no_grad():                                  # no gradient recorded: torch's layer
        layer_type(64, 64, 4, 2)(torch.randn(2, 64, 2 if transposed else 6, 2 if transposed else 6))
    assert calls == []


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_the_phase_col2im_adds_what_single_taps_add_in_the_same_order(geometry):
    """float32, bitwise: each output gets the same taps in the same order as a col2im of k*k
    single-tap strided adds, so runs keep their numbers."""
    k, s, p, op = (_pair(v) for v in geometry)
    if any(o >= st for o, st in zip(op, s)):
        pytest.skip("output_padding must be smaller than the stride")
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 7, dtype=torch.float32).contiguous(memory_format=CL)
    w = torch.randn(6, 4, *k, dtype=torch.float32).contiguous(memory_format=CL)
    b, _, h, wd = x.shape
    cols = (layers._as_rows(x) @ layers._weight_rows(w)).view(b, h, wd, k[0], k[1], 4)
    size = [(n - 1) * st - 2 * pp + kk + o for n, st, pp, kk, o in zip((h, wd), s, p, k, op)]
    full = [max((n - 1) * st + kk, pp + sz) for n, st, kk, pp, sz in zip((h, wd), s, k, p, size)]
    buf = x.new_zeros(b, *full, 4)
    for i in range(k[0]):
        for j in range(k[1]):
            buf[:, i:i + s[0] * (h - 1) + 1:s[0], j:j + s[1] * (wd - 1) + 1:s[1]] += cols[:, :, :, i, j]
    single = buf[:, p[0]:p[0] + size[0], p[1]:p[1] + size[1]].permute(0, 3, 1, 2)
    assert torch.equal(layers.conv_transpose_gemm(x, w, None, s, p, op), single)


def test_state_dict_is_torchs():
    assert list(layers.Conv2d(3, 4, 3).state_dict()) == list(nn.Conv2d(3, 4, 3).state_dict())
    assert list(layers.ConvTranspose2d(3, 4, 3, bias=False).state_dict()) == ["weight"]


def _same_grads_with_and_without(model: nn.Module, x: torch.Tensor, monkeypatch) -> None:
    """Every parameter's gradient of a VAE loss, with models/layers.py's GEMMs as routed now and
    with torch's layers everywhere."""
    def grads():
        model.zero_grad(set_to_none=True)
        out = model(x, generator=torch.Generator().manual_seed(1))
        ((out.recon - x).pow(2).sum() + out.mu.pow(2).sum() + out.logvar.exp().sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    ours = grads()
    monkeypatch.setattr(layers, "GEMM_CONVS", False)
    ref = grads()
    assert ours.keys() == ref.keys()
    for n in ours:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-9, atol=1e-11, msg=n)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gets_the_same_gradients_with_and_without_it(name, monkeypatch):
    """The whole model in float64 and channels_last (a run's layout): every parameter's gradient."""
    torch.manual_seed(0)
    model = MODELS.build(name, {"image_size": 32, "widths": [8, 16, 32], "latent_dim": 16})
    model = model.train().to(memory_format=CL)
    _same_grads_with_and_without(model, torch.rand(4, 3, 32, 32).contiguous(memory_format=CL), monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 96])
def test_the_paper_model_gets_the_same_gradients_with_the_measured_rules(size, monkeypatch):
    """The paper model at its own widths with the rules a run uses: torch's layers, GEMM weight
    gradients and all-GEMM layers side by side in one model."""
    monkeypatch.setattr(layers, "GEMM_MIN_CHANNELS", 64)
    monkeypatch.setattr(layers, "GEMM_MAX_MAP", 4)
    torch.manual_seed(0)
    model = MODELS.build("paper", {"image_size": size}).train().to(memory_format=CL)
    x = torch.rand(2, 3, size, size).contiguous(memory_format=CL)
    routes = []
    real_route = layers._route
    monkeypatch.setattr(layers, "_route", lambda *a: routes.append(real_route(*a)) or routes[-1])
    _same_grads_with_and_without(model, x, monkeypatch)
    assert {None, False, True} <= set(routes)       # torch's layer, GEMM weight gradient only, all GEMM
