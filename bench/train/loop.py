"""The one training loop.

    train(run, run_dir) -> TrainResult

Build data, model, objective, optimiser; resume from ckpt.pt if present; loop; checkpoint;
return.  Determinism: one seed drives init (torch.manual_seed), batch order (the Batches
generator) and the reparameterisation noise (its own generator); all three are checkpointed,
so a killed run resumes to the same weights as an uninterrupted one (on the same device).

Precision: the checkpoint records the effective precision it was trained in (``bench.precision``:
fp32, or bf16 autocast on CUDA); resuming it under another one would mix numerics inside one run
under one hash, so it is refused with one line naming both.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench import precision, store
from bench.config.schema import RunSpec, TrainSpec
from bench.data import batches as batches_mod
from bench.data import sources as data_mod
from bench.errors import BenchError
from bench.train.live import LiveLog
from bench.train.runtime import autocast, build_model, memory_format, resolve_device
from losses import Objective

CKPT_VERSION = 1


@dataclass
class TrainResult:
    status: str                     # "done" | "diverged"
    steps: int                      # optimiser steps completed
    reason: str | None = None       # why it diverged
    train_images_per_s: float | None = None
    wall_s: float = 0.0
    resumed_from: int = 0
    # where the wall time went (s): data (load + put on the device), setup (model, optimiser, resume),
    # steps (the optimisation loop itself), ckpt (writing checkpoints), val (TensorBoard validation)
    breakdown: dict[str, float] | None = None


def train(run: RunSpec, run_dir: Path, *, progress: bool = True, device: torch.device | None = None) -> TrainResult:
    """``device`` overrides the run's own setting (a runner's placement; not part of its identity)."""
    cfg = run.train
    device = device or resolve_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # -- data: the whole training split lives on the device as uint8
    dspec = run.data
    train_set = data_mod.load(dspec, "train")
    batches = batches_mod.Batches(train_set.images, cfg.batch_size, seed=run.seed, device=device,
                               hflip=dspec.hflip)

    spent = {"data_s": time.perf_counter() - t_start, "setup_s": 0.0, "steps_s": 0.0, "ckpt_s": 0.0, "val_s": 0.0}

    # -- model, objective, optimiser
    torch.manual_seed(run.seed)
    model = build_model(run, device)
    objective = Objective.from_config(run.loss).to(device)
    opt = make_optimizer(model, cfg, device)
    noise = torch.Generator(device=device).manual_seed(run.seed + 1)
    step_fn = torch.compile(model) if cfg.compile else model
    fmt = memory_format(run)
    prec = precision.effective(device, cfg.amp)

    # -- resume
    step, resumed_from = 0, 0
    ckpt_path = run_dir / store.CKPT
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        check_precision(ck, prec, ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        batches.load_state_dict(ck["batches"])
        noise.set_state(ck["noise"])
        step = resumed_from = ck["step"]
        _truncate_log(run_dir / store.LOG, step)

    def save_ckpt() -> float:
        t0 = time.perf_counter()
        store.torch_save(ckpt_path, {"version": CKPT_VERSION, "step": step, "precision": prec,
                                     "model": model.state_dict(),
                                     "opt": opt.state_dict(), "batches": batches.state_dict(),
                                     "noise": noise.get_state()})
        dt = time.perf_counter() - t0
        spent["ckpt_s"] += dt
        return dt

    def save_snapshot() -> float:
        """The weights at a ``train.snapshots`` step, scored after training (a budget curve from one run)."""
        t0 = time.perf_counter()
        store.torch_save(store.snapshot_path(run_dir, step), {"version": CKPT_VERSION, "step": step,
                                                             "precision": prec, "model": model.state_dict()})
        dt = time.perf_counter() - t0
        spent["ckpt_s"] += dt
        return dt

    def breakdown() -> dict[str, float]:
        spent["steps_s"] = time.perf_counter() - t_start - sum(v for k, v in spent.items() if k != "steps_s")
        return {k: round(v, 3) for k, v in spent.items()}

    # -- loop
    spent["setup_s"] = time.perf_counter() - t_start - spent["data_s"]
    live = LiveLog(run_dir, dspec, device=device, seed=run.seed, resumed_from=resumed_from)
    val_every = cfg.val_every
    model.train()
    steps, log_every, snapshots = cfg.steps, cfg.log_every, set(cfg.snapshots)
    losses = torch.zeros(log_every, device=device)           # deferred NaN check: no sync per step
    sums: dict[str, torch.Tensor] = {}
    timed_images, timed_s, t_mark, mark_step = 0, 0.0, time.perf_counter(), step
    bar = _progress(progress, steps, step, f"{run.arm}/{run.dataset}/s{run.seed}")
    with open(run_dir / store.LOG, "a") as log:
        while step < steps:
            x = batches.next().contiguous(memory_format=fmt)  # (B, 3, H, W) float in [0, 1]
            total, terms = train_step(model, step_fn, objective, opt, x, noise, step, cfg, device)
            losses[step % log_every] = total.detach().float()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            step += 1

            if step % log_every == 0 or step == steps:
                n = (step - 1) % log_every + 1
                window = losses[:n].cpu()                      # the sync point
                bad = (~torch.isfinite(window)).nonzero()
                if len(bad):
                    first = step - n + int(bad[0]) + 1
                    bar.close()
                    live.close()
                    return TrainResult("diverged", first, f"non-finite loss ({window[bad[0]].item()}) "
                                       f"at step {first}", _rate(timed_images, timed_s),
                                       time.perf_counter() - t_start, resumed_from, breakdown())
                now = time.perf_counter()
                if mark_step != resumed_from:                  # the first window is warm-up
                    timed_images += (step - mark_step) * cfg.batch_size
                    timed_s += now - t_mark
                t_mark, mark_step = now, step
                entry = {"step": step, "loss": float(window.mean()),
                         **{k: float(v) / n for k, v in sums.items()},
                         "images_per_s": _rate(timed_images, timed_s), "elapsed_s": round(now - t_start, 3)}
                log.write(json.dumps(entry) + "\n")
                log.flush()
                live.scalars(step, entry)
                sums = {}
                bar.update(n)
                bar.set_postfix(loss=f"{entry['loss']:.4g}")
            if step % val_every == 0 or step == steps:
                # not training time: the timed window skips it
                dt = live.validate(step, model, objective, amp=cfg.amp, batch_size=cfg.batch_size)
                spent["val_s"] += dt
                t_mark += dt
            if step in snapshots:
                t_mark += save_snapshot()
            if step % cfg.ckpt_every == 0 and step < steps:
                t_mark += save_ckpt()
    save_ckpt()
    bar.close()
    live.close()
    return TrainResult("done", step, None, _rate(timed_images, timed_s), time.perf_counter() - t_start,
                       resumed_from, breakdown())


FUSED_ADAM_DEVICES = ("cuda", "cpu")     # device types with a fused Adam kernel in torch >= 2.4


def make_optimizer(model: torch.nn.Module, cfg: TrainSpec, device: torch.device) -> torch.optim.Optimizer:
    """Adam as the run asks, with the fused (single-pass) kernel on CUDA and on the CPU.  Same update
    rule, float rounding only (tests/test_train.py).  On the CPU the optimizer step over fc-head-shaped
    tensors (25 M of the paper model's 31 M parameters at 96 px) is ~8x faster than torch's default
    per-tensor loop; the whole step's effect is in ``pytest --benchmark -k peers -s``.  Other devices
    keep the default implementation."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                            weight_decay=cfg.weight_decay, fused=(device.type in FUSED_ADAM_DEVICES) or None)


def train_step(model, step_fn, objective, opt, x: torch.Tensor, noise: torch.Generator, step: int, cfg: TrainSpec,
               device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step, exactly as the trainer takes it (the benchmarks time this function).
    Returns the loss and its terms as device tensors: no host sync here."""
    with autocast(device, cfg.amp):
        out = step_fn(x, generator=noise)
        total, terms = objective(x, out, model, step)
    opt.zero_grad(set_to_none=True)
    total.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return total, terms


def check_precision(ck: dict, prec: str, ckpt_path: Path) -> None:
    """Refuse to resume a checkpoint trained in another effective precision.  A checkpoint older than
    this record counts as fp32: the suite's CUDA path had never run when such checkpoints were written."""
    was = ck.get("precision", precision.FP32)
    if was != prec:
        raise BenchError(f"{ckpt_path}: trained so far in {was}, this device would resume it in {prec}; "
                         "one run must not mix the two (resume it where it started, set train.amp to match, "
                         "or delete the run directory to retrain)")


def _rate(images: int, seconds: float) -> float | None:
    return round(images / seconds, 2) if seconds > 0 and images else None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be re-logged)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    store.write_text(path, "".join(line + "\n" for line in keep))


def _progress(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, file=sys.stderr,
                leave=False, dynamic_ncols=True, mininterval=1.0)


def result_dict(r: TrainResult) -> dict:
    d = asdict(r)
    d["wall_s"] = round(d["wall_s"], 3)
    if d["train_images_per_s"] is not None and not math.isfinite(d["train_images_per_s"]):
        d["train_images_per_s"] = None
    return d
