"""What ``python -m bench interpolate`` writes: the sheets, the cross-fade, the ranked gallery, metrics.json
and the printed summary of one run's pegasus evaluation (``bench.pegasus.evaluate``)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch

from bench import store
from bench.config.schema import RunSpec
from bench.metrics import quality
from bench.pegasus.evaluate import (
    BASELINE,
    COMPARED,
    DEFAULT_PAIRS,
    DEFAULT_STEPS,
    KID_RECON,
    KINDS,
    LATENT_KINDS,
    MAX_STEP_PRIOR,
    OUT_DIR,
    PPL_PRIOR,
    QUANTITIES,
    Evaluation,
    diff_key,
    evaluate,
    key,
    kid_key,
    load_finished,
    rounded_or_none,
)
from bench.pegasus.pairs import PAIR_SEED
from bench.report.sheets import save_grid
from bench.train.runtime import resolve_device

# --------------------------------------------------------------------------- outputs

def out_dir(run_dir: Path, from_cls: str, to_cls: str) -> Path:
    return Path(run_dir) / OUT_DIR / f"{from_cls}-{to_cls}"


def interpolate(run_dir: Path, from_cls: str, to_cls: str, *, pairs: int = DEFAULT_PAIRS,
                steps: int = DEFAULT_STEPS, seed: int = PAIR_SEED, device: str = "auto", kid: bool = True,
                progress: bool = True) -> tuple[Path, Evaluation]:
    """Evaluate a finished run and write its sheets and metrics.json; returns (output dir, evaluation)."""
    dev = resolve_device(device)
    run, model = load_finished(Path(run_dir), dev)
    ev = evaluate(model, run, dev, from_cls, to_cls, pairs=pairs, steps=steps, seed=seed, kid=kid,
                  progress=progress)
    out = out_dir(run_dir, from_cls, to_cls)
    write_outputs(out, ev, run, Path(run_dir))
    return out, ev


def rows(first: torch.Tensor, frames: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """(P, K + 2, 3, H, W) -> flat rows: real from | path | real to."""
    return torch.cat([first.unsqueeze(1), frames, last.unsqueeze(1)], 1).flatten(0, 1)


def write_outputs(out: Path, ev: Evaluation, run: RunSpec, run_dir: Path) -> None:
    ncol = len(ev.ts) + 2
    for kind in LATENT_KINDS:
        save_grid(out / f"sheet_{kind}.png", rows(ev.real_from, ev.walks[kind].frames, ev.real_to), ncol)
    save_grid(out / "crossfade.png", rows(ev.real_from, ev.walks[BASELINE].frames, ev.real_to), ncol)
    save_grid(out / "prior_paths.png", ev.prior.flatten(0, 1), len(ev.ts))
    save_gallery(out / "gallery.png", ev)
    probs = {kind: {"p_mid": [[rounded_or_none(v) for v in row] for row in w.p_mid]}
             for kind, w in ev.walks.items() if w.p_mid is not None}
    doc = {"protocol": {**ev.protocol, "run_dir": str(run_dir), "run": run.resolved(),
                        "git_commit": store.git_commit(), "torch": torch.__version__,
                        "files": {"sheet_lerp.png": "rows = pairs: real from | lerp t = 0..1 | real to",
                                  "sheet_slerp.png": "rows = pairs: real from | slerp t = 0..1 | real to",
                                  "crossfade.png": "rows = pairs: real from | pixel cross-fade t = 0..1 | real to",
                                  "gallery.png": "latent midpoints (t = 0.5) of every (pair, path), by hybrid score",
                                  "prior_paths.png": "rows = prior pairs z ~ N(0, I): slerp t = 0..1"}},
           "metrics": ev.records, "class_probabilities_t0.5": probs, "gallery": ev.gallery}
    store.write_json(out / "metrics.json", doc)


def save_gallery(path: Path, ev: Evaluation) -> None:
    """Ranked tiles (upscaled to >= 96 px, nearest) with a two-line caption under each."""
    from PIL import Image, ImageDraw, ImageFont

    if not ev.gallery:
        return
    side = ev.real_from.shape[-1]
    scale = max(1, math.ceil(96 / side))
    tile, cap, pad = side * scale, 24, 2
    cols = min(8, len(ev.gallery))
    rows = math.ceil(len(ev.gallery) / cols)
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, rows * (tile + cap + pad) + pad), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, g in enumerate(ev.gallery):
        img = ev.walks[g["kind"]].mid[g["pair"]]
        arr = quality.to_uint8(img).permute(1, 2, 0).numpy()
        x, y = pad + (i % cols) * (tile + pad), pad + (i // cols) * (tile + cap + pad)
        sheet.paste(Image.fromarray(arr).resize((tile, tile), Image.NEAREST), (x, y))
        draw.text((x, y + tile + 1), f"#{g['rank']} pair {g['pair']} {g['kind']}", fill="black", font=font)
        draw.text((x, y + tile + 12), f"t={g['t']:.2f} hybrid {g['hybrid']:.2f}", fill="black", font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    store.write_bytes(path, buf.getvalue())


def _cell(rec: dict[str, Any] | None, signed: bool = False) -> str:
    if rec is None or rec.get("value") is None:
        return "n/a"
    v, lo, hi = rec["value"], rec.get("lo"), rec.get("hi")
    s = f"{v:+.3g}" if signed else f"{v:.3g}"
    return s + (f" ±{(hi - lo) / 2:.2g}" if lo is not None and hi is not None else "")


def summary(ev: Evaluation) -> str:
    """A short table for stdout: one row per quantity, mean ± 95% half-width over pairs."""
    p, r = ev.protocol, ev.records
    dist = p["distance"].get("distance") or f"none ({p['distance'].get('unavailable')})"
    if p["distance"].get("lpips_unavailable"):
        dist += " - LPIPS weights absent"
    pr = p["probe"]
    probe = (f"class probe: {pr['kind']}, held-out accuracy {pr['accuracy']:.3f} over {len(pr['classes'])} classes "
             f"(fingerprint {pr['fingerprint'][:12]})" if "accuracy" in pr else f"class probe: {pr['unavailable']}")
    lines = [f"pegasus {p['from']} -> {p['to']}: {p['pairs']} pairs x {p['steps']} steps, pair seed "
             f"{p['pair_seed']} (indices {p['pair_index_sha256']}), held-out {p['split']}",
             f"{probe}; distance: {dist}; eps {p['eps']:g}",
             f"KID reference: {p['reference']['n_real']} images, {p['reference']['reference_split']}"]
    head = ["", *KINDS, *(f"{k}-{BASELINE}" for k in LATENT_KINDS)]
    body = []
    for q, (title, _) in QUANTITIES.items():
        row = [title] + [_cell(r.get(key(q, k))) for k in KINDS]
        row += [_cell(r.get(diff_key(q, k)), signed=True) if q in COMPARED else "" for k in LATENT_KINDS]
        body.append(row)
    body.append(["KID mid vs real"] + [_cell(r.get(kid_key(k))) for k in KINDS] + ["", ""])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    kid_note = r.get(KID_RECON, {})
    lines.append(f"KID of the endpoint reconstructions: {_cell(kid_note)}"
                 + (f" ({kid_note['unavailable']})" if kid_note.get("unavailable") else ""))
    lines.append(f"prior slerp paths: PPL {_cell(r.get(PPL_PRIOR))}, max step {_cell(r.get(MAX_STEP_PRIOR))}")
    if ev.gallery:
        g = ev.gallery[0]
        lines.append(f"most hybrid midpoint: pair {g['pair']} ({g['kind']}): hybrid {g['hybrid']:.2f}, P({p['from']}) "
                     f"{g['p_from']:.2f}, P({p['to']}) {g['p_to']:.2f}")
    lines.append(f"({p['wall_s']:.0f} s; mean ± 95% t half-width over pairs)")
    return "\n".join(lines)

