"""Live view of a training run: TensorBoard event files beside the JSONL log.

    runs/<ablation>/<arm>/<dataset>/s<seed>-<hash8>/tb/events.out.tfevents.*

``tensorboard --logdir runs/`` then shows, per run: every training term at each log point, a
held-out validation loss every ``train.val_every`` steps (and at the last step), and a sheet of
held-out reconstructions and prior samples at the same points.  The JSONL log stays the record the
tables read; these files are for watching.

The validation images are a fixed, seeded, class-stratified sample of the held-out split
(``bench.data.subsets``), the same for every arm; the model is evaluated in eval mode with its own noise
generator, so validating never changes the trained weights (a run with and without it trains the same).
Without the ``tensorboard`` package nothing is written and ``LiveLog.unavailable`` says why.

When a run is scored, ``write_hparams`` adds its swept parameters (arm, dataset, seed and the grid values it
sweeps, ``bench.config.grid``) and its final metrics (``final/<metric>``) under ``tb/hparams/``, so TensorBoard's
HParams view compares the runs of ``tensorboard --logdir runs/`` side by side; a re-score replaces them.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from bench.config.grid import label
from bench.config.schema import RunSpec
from bench.data import batches as batches_mod
from bench.data import sources as data_mod
from bench.data import subsets
from bench.store import TENSORBOARD
from bench.train.runtime import autocast

N_VAL = 256        # held-out images per validation pass
N_SHEET = 16       # images per TensorBoard sheet (reconstructions and samples)
HPARAMS = "hparams"    # tb/hparams/: the HParams view's session of a scored run
FINAL = "final/"       # tag prefix of the final metrics there


class LiveLog:
    """TensorBoard writer of one run (a no-op when tensorboard is not installed)."""

    def __init__(self, run_dir: Path, dspec: data_mod.DataSpec, *, device: torch.device, seed: int,
                 resumed_from: int = 0):
        self.writer, self.unavailable = None, None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            self.unavailable = f"tensorboard is not installed ({exc}); pip install tensorboard"
            return
        # purge_step drops events logged after the checkpoint a resumed run restarts from
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD), purge_step=resumed_from or None)
        held_out = data_mod.load(dspec, "test")
        sub = subsets.stratified(held_out.labels, min(N_VAL, len(held_out.images)))
        self.val = held_out.images[sub.indices]                 # (n, 3, H, W) uint8, stays on the CPU
        self.device = device
        self.seed = seed

    def scalars(self, step: int, entry: dict[str, float | None]) -> None:
        if self.writer is None:
            return
        for key, value in entry.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)

    @torch.no_grad()
    def validate(self, step: int, model: torch.nn.Module, objective, *, amp: bool, batch_size: int) -> float:
        """Held-out loss (mean over the validation images) and sheets; returns seconds spent."""
        if self.writer is None:
            return 0.0
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        noise = torch.Generator(device=self.device).manual_seed(subsets.EVAL_SEED)
        sums: dict[str, float] = {}
        total, n = 0.0, 0
        for i in range(0, len(self.val), batch_size):
            x = batches_mod.to_float(self.val[i:i + batch_size], self.device)    # (B, 3, H, W) in [0, 1]
            with autocast(self.device, amp):
                out = model(x, generator=noise)
                loss, terms = objective(x, out, model, step)
            total += float(loss) * len(x)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            n += len(x)
            if i == 0:
                pairs = torch.cat([x[:N_SHEET // 2], out.recon[:N_SHEET // 2].float()])   # originals, then recons
                self.writer.add_images("val/recon", pairs.clamp(0, 1), step)
        self.writer.add_scalar("val/loss", total / n, step)
        for k, v in sums.items():
            self.writer.add_scalar(f"val/{k}", v / n, step)
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        z = torch.randn(N_SHEET, model.latent_dim, device=self.device, generator=g)
        self.writer.add_images("samples", model.decode(z).float().clamp(0, 1), step)
        self.writer.flush()
        model.train(was_training)
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_hparams(run: RunSpec) -> dict[str, Any]:
    """What the HParams view compares runs by: the arm, dataset and seed, and every grid value the arm sweeps
    (lists, e.g. ``model.widths``, as their arm-name label)."""
    swept = {k: (label(v) if isinstance(v, list) else v) for k, v in run.swept.items()}
    return {"arm": run.arm, "dataset": run.dataset, "seed": run.seed, **swept}


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``final/<key>``: every finite number among a run's metric records (unavailable ones are left out)."""
    out = {}
    for key, rec in metrics.items():
        v = rec.get("value") if isinstance(rec, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[FINAL + key] = float(v)
    return out


def write_hparams(run_dir: Path, run: RunSpec, metrics: dict[str, Any], step: int) -> Path | None:
    """Write ``tb/hparams/`` (replacing what an earlier scoring wrote): the run's hparams and final metrics, as
    ``SummaryWriter.add_hparams`` writes them, but in a fixed folder rather than a new timestamped one per call
    (and without add_hparams' extra empty events file in tb/).  None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        return None
    folder = run_dir / TENSORBOARD / HPARAMS
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    values = final_metrics(metrics)
    with SummaryWriter(str(folder)) as w:
        for summary in hparams(run_hparams(run), values):      # experiment, session start, session end
            w.file_writer.add_summary(summary, step)
        for tag, v in values.items():
            w.add_scalar(tag, v, step)
    return folder
