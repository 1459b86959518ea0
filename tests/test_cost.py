"""Cost metrics: median throughput with a fake clock, FLOPs, device peak cache, MFU."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.metrics import cost
from models import MODELS
from models.registry import VAEOutput


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_throughput_is_positive_and_uses_the_median(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(cost, "_now", clock)
    durations = iter([9.0, 9.0, 9.0] + [1.0, 1.0, 100.0, 1.0, 2.0, 1.0, 50.0])  # 3 warm-ups, 7 timed
    calls = []

    def fn(batch):
        calls.append(len(batch))
        clock.t += next(durations)

    ips = cost.throughput(fn, torch.zeros(10, 4), device="cpu", warmup=3, repeats=7)
    assert len(calls) == 10
    assert ips == pytest.approx(10 / 1.0)            # median of (1,1,100,1,2,1,50) = 1; the mean would be 22.3


def test_throughput_real_function_positive():
    ips = cost.throughput(lambda t: t @ t, torch.rand(64, 64), device="cpu", warmup=1, repeats=3)
    assert ips > 0


def test_interleaved_takes_rounds_in_turn_and_the_median_of_each():
    order, values = [], {"a": iter([5.0, 1.0, 3.0]), "b": iter([2.0, 40.0, 4.0])}

    def measure(k):
        def f():
            order.append(k)
            return next(values[k])
        return f

    ips = cost.interleaved({"a": measure("a"), "b": measure("b")}, rounds=3)
    assert order == ["a", "b", "b", "a", "a", "b"]   # every variant once per round, the order turning
    assert ips == {"a": 3.0, "b": 4.0}               # medians; b's mean would be 15.3
    with pytest.raises(ValueError):
        cost.interleaved({"a": measure("a")}, rounds=0)


def test_interleaved_rounds_turn_so_each_variant_takes_each_place():
    order = []
    got = cost.interleaved_rounds({k: (lambda k=k: order.append(k) or len(order)) for k in "abc"}, rounds=3)
    assert order == list("abc" "bca" "cab")
    assert got == {"a": [1, 6, 8], "b": [2, 4, 9], "c": [3, 5, 7]}


def test_paired_ratio_compares_round_by_round_so_a_drift_cancels():
    # The machine slows down over the run; a is always 1.2x b within a round.
    b = [100.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0]
    a = [1.2 * x for x in b]
    r = cost.paired_ratio(a, b)
    assert (r.median, r.lo, r.hi) == pytest.approx((1.2, 1.2, 1.2)) and r.coverage == pytest.approx(1 - 2 / 128)
    # One slow round for a alone: the median ignores it, the interval (7 rounds: min to max) shows it.
    a[3] = 0.6 * b[3]
    assert cost.paired_ratio(a, b)[:3] == pytest.approx((1.2, 0.6, 1.2))
    # Too few rounds for a 95% interval: the median stands, the interval is NaN.
    few = cost.paired_ratio(a[:5], b[:5])
    assert few.median == pytest.approx(1.2) and math.isnan(few.lo) and math.isnan(few.hi)
    with pytest.raises(ValueError):
        cost.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        cost.paired_ratio([], [])


def test_device_peak_measured_once_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path))
    monkeypatch.setattr(cost.os, "getloadavg", lambda: (0.1, 0.1, 0.1))     # a quiet machine
    calls = []

    def fake_measure(device, n=None, repeats=5):
        calls.append(device)
        return 1.5e11

    monkeypatch.setattr(cost, "measure_matmul_peak", fake_measure)
    assert cost.device_matmul_peak("cpu") == 1.5e11
    assert cost.device_matmul_peak(torch.device("cpu")) == 1.5e11
    assert len(calls) == 1
    doc = json.loads((tmp_path / "device_peak.json").read_text())
    key = cost.device_key("cpu")
    assert doc[key]["flops_per_s"] == 1.5e11 and "torch" in key and "threads" in key and "float32" in key
    assert not list(tmp_path.glob(".*tmp"))                # atomic write left no temp file

    monkeypatch.setattr(torch, "get_num_threads", lambda: 12345)   # another key -> measured again
    cost.device_matmul_peak("cpu")
    assert len(calls) == 2


def test_real_matmul_peak_is_plausible():
    peak = cost.measure_matmul_peak(torch.device("cpu"), n=256, repeats=2)
    assert 1e6 < peak < 1e15


def test_mfu_is_training_flops_times_images_per_s_over_the_peak():
    assert cost.mfu(3e6, 100.0, 3e9) == pytest.approx(0.1)


def test_training_flops_count_what_a_step_computes_exactly():
    """Two linear layers on a batch that needs no gradient: forward 2 * (48 * 5 + 5 * 7) per image;
    backward: both weight gradients, and the input gradient of the second layer only."""
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3 * 4 * 4, 5, bias=False)
            self.b = torch.nn.Linear(5, 7, bias=False)

        def forward(self, x):
            h = self.b(self.a(x.flatten(1)))
            return VAEOutput(h, h[:, :2], h[:, 2:4], h[:, :2])

    m = Two()
    flops, method = cost.training_flops_per_image(m, 4)
    assert flops == 2 * (2 * 48 * 5) + 3 * (2 * 5 * 7) and "FlopCounterMode" in method
    assert all(p.grad is None for p in m.parameters()) and m.training       # no side effects


def test_flops_count_a_linear_layer_exactly():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 4 * 4, 5, bias=False)

        def forward(self, x):
            return self.fc(x.flatten(1))

    flops, method = cost.forward_flops_per_image(Tiny(), 4)
    assert flops == 2 * 48 * 5 and "FlopCounterMode" in method      # 2 FLOPs per multiply-add

def test_peak_memory_is_none_off_cuda():
    assert cost.peak_memory_mb(lambda: None, "cpu") is None


def test_device_peak_measured_on_a_busy_machine_is_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path))
    monkeypatch.setattr(cost.os, "getloadavg", lambda: (9.0, 9.0, 9.0))     # others share the CPU
    monkeypatch.setattr(cost, "measure_matmul_peak", lambda device, n=None, repeats=5: 3.3e10)
    assert cost.device_matmul_peak("cpu") == 3.3e10
    assert not (tmp_path / "device_peak.json").exists()                    # too low to keep
    monkeypatch.setattr(cost.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr(cost, "measure_matmul_peak", lambda device, n=None, repeats=5: 2.1e11)
    assert cost.device_matmul_peak("cpu") == 2.1e11
    key = cost.device_key("cpu")
    assert json.loads((tmp_path / "device_peak.json").read_text())[key]["busy"] is False


def _tiny_vae_step():
    """A small paper-style VAE (64 channels, so its convs take the suite's GEMM passes) and one
    training step of it (MSE + KL, backward, no optimiser)."""
    from models import MODELS
    torch.manual_seed(0)
    model = MODELS.build("paper", {"image_size": 16, "widths": [64, 64], "latent_dim": 8}).train()
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(x, generator=g)
        loss = (out.recon - x).pow(2).sum() + (out.mu.pow(2) + out.logvar.exp() - 1 - out.logvar).sum()
        loss.backward()
    return model, step


def test_module_passes_replay_each_layer_alone_with_the_step_s_tensors():
    model, step = _tiny_vae_step()
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    passes = cost.module_passes(model, step, kinds)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, kinds)}
    assert sorted(p.name for p in passes) == sorted(layers)           # every layer, once
    grads = {n: m.weight.grad.clone() for n, m in layers.items()}      # from the real step
    for m in layers.values():
        m.weight.grad = None
    for p in passes:
        p.run()
        # the weight gradient depends only on the layer's input and output gradient: the replay
        # gets the step's, so it computes the step's
        torch.testing.assert_close(layers[p.name].weight.grad, grads[p.name], rtol=1e-6, atol=0)
    assert not any(h for m in layers.values() for h in m._forward_hooks.values())   # hooks removed


def test_module_passes_skip_calls_outside_the_backward_pass_and_other_kinds():
    model, step = _tiny_vae_step()
    norm = cost.module_passes(model, step, (torch.nn.BatchNorm2d, torch.nn.LeakyReLU))
    names = [p.name for p in norm]
    assert names and all(isinstance(model.get_submodule(n), (torch.nn.BatchNorm2d, torch.nn.LeakyReLU))
                         for n in names)
    with torch.no_grad():             # no output takes part in a backward pass: nothing to replay
        assert cost.module_passes(model, lambda: model(torch.rand(2, 3, 16, 16)), (torch.nn.Conv2d,)) == []
    assert cost.seconds_per_call(norm[0].run, device="cpu", warmup=0, repeats=1) > 0


@pytest.mark.parametrize("name", MODELS.names())
def test_matmul_passes_carry_exactly_the_flops_a_step_counts(name):
    """The step's conv and linear calls as plain matmuls: 2 M K N summed over them is the training
    step's counted FLOPs (forward, weight gradients, input gradients where the step needs them)."""
    torch.manual_seed(0)
    model = MODELS.build(name, {"image_size": 32}).train()
    x, batch = torch.rand(3, 3, 32, 32), 3

    def step():
        out = model(x)
        (out.recon.sum() + out.mu.sum() + out.logvar.sum()).backward()
    passes = cost.matmul_passes(model, step)
    flops, _ = cost.training_flops_per_image(model, 32)
    assert sum(2 * m * k * n for p in passes for m, k, n in p.shapes) == flops * batch
    assert all(len(p.layouts) == len(p.shapes) and set(p.layouts) <= set(cost.LAYOUTS) for p in passes)
    first = passes[0]
    assert len(first.shapes) == 2                     # the batch needs no gradient: no input gradient
    assert all(len(p.shapes) == 3 for p in passes[1:])
    model.zero_grad(set_to_none=True)
    first.run()
    assert all(q.grad is None for q in model.parameters())        # plain matmuls, not the model


def test_matmul_shapes_of_a_conv_and_a_transposed_conv():
    conv = torch.nn.Conv2d(8, 16, 4, 2, 1)                         # 10 x 10 -> 5 x 5
    assert cost.matmul_shapes(conv, (2, 8, 10, 10), (2, 16, 5, 5), True) == [
        (2 * 25, 8 * 16, 16), (16, 2 * 25, 8 * 16), (2 * 25, 16, 8 * 16)]
    up = torch.nn.ConvTranspose2d(16, 8, 4, 2, 1)                  # 5 x 5 -> 10 x 10
    assert cost.matmul_shapes(up, (2, 16, 5, 5), (2, 8, 10, 10), False) == [
        (2 * 25, 16, 8 * 16), (16, 2 * 25, 8 * 16)]
    fc = torch.nn.Linear(6, 4)
    assert cost.matmul_shapes(fc, (5, 6), (5, 4), True) == [(5, 6, 4), (4, 5, 6), (5, 4, 6)]
    for bad in (torch.nn.Conv2d(8, 8, 3, groups=2), torch.nn.Conv2d(8, 8, 3, dilation=2), torch.nn.ReLU()):
        with pytest.raises(ValueError, match="matmul_shapes"):
            cost.matmul_shapes(bad, (1, 8, 9, 9), (1, 8, 5, 5), True)


def test_matmul_operands_in_each_layout_are_the_same_shape():
    like, gen = torch.empty(0), torch.Generator().manual_seed(0)
    row, col = cost._operand(3, 5, "N", like, gen), cost._operand(3, 5, "T", like, gen)
    assert row.shape == col.shape == (3, 5) and row.stride() == (5, 1) and col.stride() == (1, 3)
    layout, run = cost._fastest_matmul(4, 3, 2, like, gen)
    assert layout in cost.LAYOUTS and run().shape == (4, 2)
