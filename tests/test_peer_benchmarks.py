"""The suite's trainer side by side with a plain PyTorch loop and with pythae's trainer
(`pytest --benchmark -k peers -s`; plain `pytest` skips it).

Same network (the paper's model: kernel 4, stride 2, fc heads; latent 128 at 32 px, 1024 at 96 px),
same resident batch, same loss (summed MSE + analytic KL), same Adam, on this device:

* ``trainer``       — ``bench.train.loop.train_step``, the function the training loop calls, with a
  run's default settings (channels_last model and batches);
* ``trainer_nchw``  — the same with ``train.channels_last: false``;
* ``trainer_compile`` — the same with ``train.compile: true`` (torch.compile, compiled before timing);
* ``plain``         — a hand-written step, NCHW;
* ``plain_cl``      — the same, channels_last;
* ``pythae``        — pythae 0.1.2's ``BaseTrainer.train_step`` (one epoch of 8 batches through its
  DataLoader) on the very same encoder/decoder (``pip install -e ".[peers]"``; skipped otherwise),
  timed in the same interleaved rounds as the others;
* ``plain_cl_kept`` — ``plain_cl`` in a process that keeps freed memory as ``bench run``'s does;
* ``trainer_torch_defaults`` — ``trainer`` in a default process with torch's own convolutions for
  every pass instead of models/layers.py's GEMMs: the trainer without the suite's two CPU-only
  settings (every other variant uses the suite's network, layers included).

Every variant runs in its own process, set up as its users would run it: the trainer variants in a
process prepared as ``bench run`` prepares one (``bench.train.runtime.keep_freed_memory``), the plain loops
and pythae in a default one (``plain_cl_kept`` shows how much of the difference is that setting).
The processes take turns: images/s is the median over interleaved rounds
(``bench.metrics.cost.interleaved_rounds``; the order turns by one each round) of the median of timed
calls (``cost.throughput``), so a slow spell of a shared machine hits every variant.  The ratios
compare two variants round by round (``cost.paired_ratio``): the median ratio and its
distribution-free interval (with the default 7 rounds, their lowest and highest ratio: 98.4%;
``pytest --peers-rounds 15``: the 4th to the 12th, 96.5%, a narrower interval for twice the time),
which says whether this one run decides a target (the interval on one side of it).
MFU is a training step's FLOPs per image as counted on the model (``cost.training_flops_per_image``)
against the device's fp32 matmul peak, measured in the same rounds (one measurement per
round, among the variants) and at the session's start; the highest of these counts, since a peak
measured in a slow spell would inflate every MFU.  Targets
(issue: training at the speed of the hardware): trainer >= 1.0x the best of the three plain loops,
>= 1.5x pythae; they are reported in ``extra_info`` (``*_target_met``, ``*_decided_by_this_run``), and
the run fails only on an impossible number (MFU > 1).  Run on an otherwise idle machine.  The
records are built by ``bench.speed.report``; with ``--benchmark-json=FILE``, ``python -m bench speed
FILE`` turns them into results/speed/README.md.

``test_peers_trainer_step_anatomy`` (``-k step_anatomy``) says where the trainer's step goes: in the
same interleaved rounds as the whole step, the step's conv and linear layers replayed alone on the
tensors the step gave them (``cost.module_passes``), and its BN + LeakyReLU modules likewise; the
rest is loss, optimiser and glue.  Its MFU ceiling is the MFU of a step that did nothing but those
conv and linear passes: no training loop or fusion of the other ops can pass it on this device
without faster convolution kernels.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from conftest import BENCH_DEVICES

from bench.config.schema import TrainSpec
from bench.metrics import cost
from bench.speed import report as speed_report
from bench.speed.report import MATMULS, MFU_TARGET, STEP_WITH_MATMULS
from bench.train.loop import make_optimizer, train_step
from bench.train.runtime import keep_freed_memory
from losses import Objective
from models import MODELS, layers

pytestmark = pytest.mark.benchmark

LOSS = [{"name": "kl", "weight": 1.0}, {"name": "mse", "weight": 1.0}]
# The device a worker measures on: every available one (DEVICES), each worker told by ENV_DEVICE.
ENV_DEVICE = "PEGASUS_BENCH_DEVICE"
DEVICE = torch.device(os.environ.get(ENV_DEVICE, "cpu"))
DEVICES = BENCH_DEVICES


def _model(image_size: int, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    m = MODELS.build("paper", {"image_size": image_size}).train().to(DEVICE)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _plain(image_size: int, x: torch.Tensor, channels_last: bool):
    m = _model(image_size, channels_last)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step(batch):
        out = m(batch, generator=g)
        rec = (out.recon - batch).pow(2).flatten(1).sum(1).mean()
        kl = 0.5 * (out.mu.pow(2) + out.logvar.exp() - 1 - out.logvar).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        (rec + kl).backward()
        opt.step()
    return step, x


def _trainer(image_size: int, x: torch.Tensor, **cfg_overrides):
    """(step, its batch): the trainer's step, see :func:`_trainer_and_model`."""
    return _trainer_and_model(image_size, x, **cfg_overrides)[:2]


def _trainer_and_model(image_size: int, x: torch.Tensor, **cfg_overrides):
    """(step, its batch, the model): the trainer's step as a run with these train settings takes it
    (model and batch in the run's memory format, torch.compile when asked)."""
    cfg = TrainSpec(**cfg_overrides)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    m = _model(image_size).to(memory_format=fmt)
    objective = Objective.from_config(LOSS)
    opt = make_optimizer(m, cfg, DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    step_fn = torch.compile(m) if cfg.compile else m
    def step(batch):
        return train_step(m, step_fn, objective, opt, batch, g, 0, cfg, DEVICE)
    return step, x.contiguous(memory_format=fmt), m


def _pythae(image_size: int, x: torch.Tensor, tmp_path):
    """pythae's trainer on the same network: images/s of one epoch of 8 batches (after a warm-up epoch)."""
    pytest.importorskip("pythae", reason="pythae not installed (pip install -e '.[peers]')")
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    net = _model(image_size)

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, inp):
            mu, logvar = self.net.encode(inp)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=self.net.decode(z))

    config = VAEConfig(input_dim=(3, image_size, image_size), latent_dim=net.latent_dim, reconstruction_loss="mse")
    model = VAE(config, encoder=Enc(), decoder=Dec())
    batch = len(x)
    data = x.repeat(8, 1, 1, 1)
    tc = BaseTrainerConfig(output_dir=str(tmp_path), per_device_train_batch_size=batch, num_epochs=1,
                           learning_rate=1e-3, no_cuda=DEVICE.type != "cuda", train_dataloader_num_workers=0)
    trainer = BaseTrainer(model, BaseDataset(data, torch.zeros(len(data))), training_config=tc)
    trainer.prepare_training()          # optimiser, output folder, callbacks (as BaseTrainer.train does)
    return lambda _batch: trainer.train_step(epoch=1), len(data)


# --------------------------------------------------------------------------- one process per variant

class Variant(NamedTuple):
    build: Callable        # (image_size, x, tmp dir) -> (step, its argument) or pythae's (step, images)
    keeps_freed: bool      # the process keeps freed memory, as `bench run`'s does
    gemm_convs: bool = True         # models/layers.py's CPU GEMM passes (False: torch's convs)


VARIANTS = {
    "trainer": Variant(lambda s, x, tmp: _trainer(s, x), True),
    "trainer_nchw": Variant(lambda s, x, tmp: _trainer(s, x, channels_last=False), True),
    "trainer_compile": Variant(lambda s, x, tmp: _trainer(s, x, compile=True), True),
    "trainer_torch_defaults": Variant(lambda s, x, tmp: _trainer(s, x), False, False),
    "plain": Variant(lambda s, x, tmp: _plain(s, x, False), False),
    "plain_cl": Variant(lambda s, x, tmp: _plain(s, x, True), False),
    "plain_cl_kept": Variant(lambda s, x, tmp: _plain(s, x, True), True),
    "pythae": Variant(lambda s, x, tmp: _pythae(s, x, tmp), False),
}
PLAIN = ("plain", "plain_cl", "plain_cl_kept")


def _serve(variant: str, image_size: int, batch: int, tmp: str) -> None:
    """Worker process: build the variant, warm it up (and compile it), say ``ready``, then answer
    ``measure`` (images/s) and ``step`` (one untimed step) on stdin until it closes."""
    reply, sys.stdout = sys.stdout, sys.stderr   # whatever a variant prints stays off the answers
    spec = VARIANTS[variant]
    layers.GEMM_CONVS = spec.gemm_convs
    if spec.keeps_freed:
        keep_freed_memory()
    x = torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    try:
        built = spec.build(image_size, x, Path(tmp))
    except pytest.skip.Exception as exc:
        print(f"skip {exc}", file=reply, flush=True)
        return
    if variant == "pythae":      # one epoch of 8 batches per timed call
        (step, n), arg = built, None
        measure = lambda: cost.throughput(step, arg, device=DEVICE, warmup=0, repeats=1, batch_size=n)
    else:
        (step, arg) = built
        measure = lambda: cost.throughput(step, arg, device=DEVICE, repeats=5)
    measure()                    # warm-up (torch.compile compiles here), outside the rounds
    print("ready", file=reply, flush=True)
    for line in sys.stdin:
        if line.strip() == "measure":
            print(measure(), file=reply, flush=True)
        elif line.strip() == "step":
            step(arg)
            print("ok", file=reply, flush=True)


class _Worker:
    """One variant in its own process; idle (blocked on stdin) while another is timed."""

    def __init__(self, variant: str, image_size: int, batch: int, tmp: Path, device: str = "cpu"):
        self.proc = subprocess.Popen([sys.executable, __file__, variant, str(image_size), str(batch), str(tmp)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, ENV_DEVICE: device})
        first = self.proc.stdout.readline().strip()
        self.skipped = first[5:] if first.startswith("skip ") else None
        if first != "ready" and self.skipped is None:
            raise RuntimeError(f"{variant} worker failed to start (exit {self.proc.wait()}; see its stderr)")

    def _ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"worker died (exit {self.proc.wait()}; see its stderr)")
        return answer.strip()

    def measure(self) -> float:
        return float(self._ask("measure"))

    def step(self) -> None:
        self._ask("step")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture
def rounds(request) -> int:
    """Interleaved rounds per variant (``pytest --peers-rounds N``, default 7); images/s is the median over them."""
    return request.config.getoption("--peers-rounds")


@pytest.fixture(autouse=True)
def _provenance(benchmark, request):
    """Every record says how it was made: pytest's arguments, torch, and the benchmark's wall time
    (``python -m bench speed`` puts them in results/speed/README.md)."""
    start = time.perf_counter()
    yield
    benchmark.extra_info.update({"pytest_args": list(request.config.invocation_params.args),
                                 "torch": torch.__version__, "wall_s": round(time.perf_counter() - start, 1)})


@pytest.fixture
def start_worker(tmp_path):
    started = []

    def start(variant: str, image_size: int, batch: int, device: str = "cpu") -> _Worker:
        w = _Worker(variant, image_size, batch, tmp_path / f"{variant}-{image_size}-{batch}-{device}", device)
        started.append(w)
        return w
    yield start
    for w in started:
        w.close()


def _interleaved_with_peak(measures: dict, rounds: int,
                           device: torch.device = DEVICE) -> tuple[dict, float, list[float]]:
    """(every round's images/s of each measure, matmul peak FLOP/s, the per-round peaks):
    ``cost.interleaved_rounds`` with the device's matmul peak measured once per round among the
    variants.  The peak used is the highest of those and the session's; a lower one would only raise
    every MFU."""
    peaks: list[float] = []

    def peak() -> float:
        peaks.append(cost.measure_matmul_peak(device))
        return peaks[-1]

    got = cost.interleaved_rounds({**measures, "matmul peak": peak}, rounds)
    del got["matmul peak"]
    return got, max(cost.device_matmul_peak(device), *peaks), peaks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_size,batch", [(32, 128), (96, 32)])
def test_peers_trainer_vs_plain_loop_vs_pythae(benchmark, start_worker, rounds, image_size, batch, device):
    workers = {v: start_worker(v, image_size, batch, device) for v in VARIANTS}   # one at a time: no overlap
    for v, w in workers.items():
        if w.skipped:
            benchmark.extra_info[v] = f"skipped: {w.skipped}"
    got, peak, peaks = _interleaved_with_peak({v: w.measure for v, w in workers.items() if not w.skipped},
                                              rounds, torch.device(device))
    benchmark.extra_info["device"] = device
    benchmark.pedantic(workers["trainer"].step, rounds=3, iterations=1)     # pytest-benchmark's own record

    flops, _ = cost.training_flops_per_image(_model(image_size), image_size)
    info = speed_report.versus_info(got, PLAIN, flops, peak, peaks, image_size)
    ips = {k: info[f"{k}{speed_report.IPS}"] for k in got}
    mfu = {k: info[f"{k}_mfu"] for k in got}
    benchmark.extra_info.update(info)
    print(f"\n{image_size}px batch {batch}: " + ", ".join(f"{k} {v:.0f} img/s (MFU {mfu[k]:.2f})"
                                                        for k, v in ips.items())
          + "; round by round: " + "; ".join(
              f"{name} {info[name]:.3f} ({info[name + '_interval'][0]:.3f}-{info[name + '_interval'][1]:.3f}: "
              f"target {'met' if info[name + '_target_met'] else 'missed'}"
              f"{'' if info[name + '_decided_by_this_run'] else ', undecided'})"
              for name in ("trainer_vs_best_plain", "trainer_vs_pythae", "trainer_mfu") if name in info)
          + f"; matmul peak {peak / 1e9:.0f} GFLOP/s (by round: {', '.join(f'{p / 1e9:.0f}' for p in peaks)})")
    assert all(0 < v <= 1 for v in mfu.values()), mfu           # an MFU above 1 is a bug


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_size,batches", [(32, (64, 128, 256, 512, 1024)), (96, (16, 32, 64, 128, 256))])
def test_peers_trainer_batch_scaling(benchmark, start_worker, rounds, image_size, batches, device):
    """The trainer's images/s and MFU against the batch size: where this device saturates (the batches
    run past the suite's training batch, far enough to show whether a larger batch would reach the MFU
    target).  The batch is an experimental choice, so this informs it rather than changing it; the MFU
    target is checked at the batch the suite trains with at paper scale (``speed_report.TRAIN_BATCH``,
    128), as well as at the peers benchmark's."""
    workers = {b: start_worker("trainer", image_size, b, device) for b in batches}
    got, peak, peaks = _interleaved_with_peak({b: w.measure for b, w in workers.items()}, rounds, torch.device(device))
    benchmark.extra_info["device"] = device
    benchmark.pedantic(workers[batches[1]].step, rounds=3, iterations=1)
    flops, _ = cost.training_flops_per_image(_model(image_size), image_size)
    info = speed_report.batch_info(got, flops, peak, peaks, image_size)
    benchmark.extra_info.update(info)
    ips = {b: info[f"batch{b}{speed_report.IPS}"] for b in got}
    mfu = {b: info[f"batch{b}_mfu"] for b in got}
    print(f"\n{image_size}px trainer by batch: " + ", ".join(
        f"{b}: {v:.0f} img/s (MFU {mfu[b]:.2f}, {info[f'batch{b}_mfu_interval'][0]:.2f}-"
        f"{info[f'batch{b}_mfu_interval'][1]:.2f})" for b, v in ips.items())
          + f"; matmul peak {peak / 1e9:.0f} GFLOP/s")
    assert all(0 < v <= 1 for v in mfu.values()), mfu


# --------------------------------------------------------------------------- where a step's time goes

PARTS = {"conv_linear": cost.MATMUL_KINDS, "bn_leakyrelu": (torch.nn.BatchNorm2d, torch.nn.LeakyReLU)}


def _anatomy(image_size: int, batch: int, n_rounds: int) -> dict:
    """Worker, in a process set up as ``bench run``'s: the trainer's step and, in the same interleaved
    rounds, each part's modules replayed alone (``cost.module_passes``) and the conv and linear
    passes' arithmetic as plain matmuls of their shapes (``cost.matmul_passes``), with the matmul
    peak (:func:`_interleaved_with_peak`); then each pass alone once more, for the table by layer."""
    keep_freed_memory()
    x = torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    step, arg, model = _trainer_and_model(image_size, x)
    run = lambda: step(arg)
    for _ in range(3):
        run()
    passes = {part: cost.module_passes(model, run, kinds) for part, kinds in PARTS.items()}
    passes[MATMULS] = cost.matmul_passes(model, run)
    seconds = lambda fn: cost.seconds_per_call(fn, device=DEVICE)
    measures = {"step": lambda: seconds(run)}
    for part, ps in passes.items():
        measures[part] = lambda ps=ps: seconds(lambda: [p.run() for p in ps])
    rounds, peak, peaks = _interleaved_with_peak(measures, n_rounds)
    by_pass = {part: [[p.name, seconds(p.run)] for p in ps] for part, ps in passes.items()}
    return {"rounds": rounds, "peak": peak, "peaks": peaks, "by_pass": by_pass}


@pytest.mark.parametrize("image_size,batch", [(32, 128), (96, 32)])
def test_peers_trainer_step_anatomy(benchmark, rounds, image_size, batch):
    """Where the trainer's step goes: its conv and linear layers' own passes, BN + LeakyReLU, and the
    rest (loss, optimiser, reparameterisation, output sigmoid, glue), each part timed alone on the
    step's own tensors in the same rounds as the whole step.  The MFU ceiling is the step's MFU if it
    did nothing but its conv and linear passes at the speed they run alone: what a training loop
    could reach on this device without faster convolution kernels, whatever else it fuses.  Beside
    it, the same passes' arithmetic as plain matmuls of their shapes (fastest operand layout, no
    im2col or col2im), and the step with those in their place: what the step would take if its
    convolutions ran as fast as this device's BLAS does their products.  CPU only: it times the CPU passes of
    models/layers.py (on CUDA the layers are torch's own and cuDNN's kernels)."""
    def run():
        out = subprocess.run([sys.executable, __file__, "--anatomy", str(image_size), str(batch), str(rounds)],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"anatomy worker failed (exit {out.returncode}): {out.stderr[-2000:]}")
        return json.loads(out.stdout)
    res = benchmark.pedantic(run, rounds=1, iterations=1)
    flops, _ = cost.training_flops_per_image(_model(image_size), image_size)
    info = speed_report.anatomy_info(res["rounds"], list(PARTS), res["by_pass"], flops, batch, res["peak"],
                                     res["peaks"], image_size)
    benchmark.extra_info.update(info)
    ms = {k: info[f"{k}_ms"] for k in ("step", *PARTS, "other")}
    mfu = {"step": info["step_mfu"], "ceiling": info["mfu_ceiling"], MATMULS: info[f"mfu_{MATMULS}"],
           STEP_WITH_MATMULS: info[f"mfu_{STEP_WITH_MATMULS}"]}
    top = sorted(((t, n) for part in PARTS for n, t in res["by_pass"][part]), reverse=True)[:6]
    print(f"\n{image_size}px batch {batch}, ms per step (median of {rounds} rounds): step {ms['step']:.1f}, "
          f"conv + linear passes {ms['conv_linear']:.1f} ({info['conv_linear_gflops']:.0f} GFLOP/s), "
          f"BN + LeakyReLU {ms['bn_leakyrelu']:.1f}, the rest {ms['other']:.1f}; share of the step round by round: "
          + ", ".join(f"{part} {info[part + '_share']:.2f} ({info[part + '_share_interval'][0]:.2f}-"
                      f"{info[part + '_share_interval'][1]:.2f})" for part in PARTS) + "; "
          f"MFU {mfu['step']:.2f}, ceiling {mfu['ceiling']:.2f} (target {MFU_TARGET[image_size]}); conv + linear "
          f"as plain matmuls {info[MATMULS + '_ms']:.1f} ms (MFU {mfu[MATMULS]:.2f}), the step with them "
          f"{info[STEP_WITH_MATMULS + '_ms']:.1f} ms (MFU {mfu[STEP_WITH_MATMULS]:.2f}); "
          f"matmul peak {res['peak'] / 1e9:.0f} GFLOP/s; slowest passes: "
          + ", ".join(f"{n} {1e3 * t:.1f}" for t, n in top))
    assert all(0 < v <= 1 for v in mfu.values()), mfu           # an MFU above 1 is a bug


if __name__ == "__main__":       # a worker: python tests/test_peer_benchmarks.py VARIANT SIZE BATCH TMPDIR
    if sys.argv[1] == "--anatomy":                                # ... or --anatomy SIZE BATCH ROUNDS
        reply, sys.stdout = sys.stdout, sys.stderr
        print(json.dumps(_anatomy(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))), file=reply)
    else:
        _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
