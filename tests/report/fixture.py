"""A hand-made sweep folder whose report numbers are worked out by hand in the tests.

Target 2.5, budget 10 iterations, evaluation every 2. A run "reaching at step s" has evaluations
above the target before ``s`` and exactly ``2.5`` at ``s`` (so ``<=`` is what counts, and the
fractional crossing is ``s`` itself), then falls linearly to its final loss (a run reaching at
the budget's last step ends at 2.5). Costs per iteration: AdamW 1000 tokens, 8 grad-eq, 2 s,
2 GFLOPs; GN 1500 tokens (line search included), 10 grad-eq, 2.5 s, 5 GFLOPs (other methods:
see ``COST``).
With a scan over ``data.micro_batches`` = K, every cost per iteration is multiplied by K / 8.

method  setting           reach step (final loss) of seeds 0, 1, 2     median iter  median final
adamw   lr=0.001          8 (2.40), 10 (2.50), never (2.55)            10           2.50
adamw   lr=0.003 (tuned)  6 (2.30), 8 (2.35), 10 (2.50); seed 3 unfinished  8       2.35
gn      inner=0.01 (tuned)  4 (2.20), 4 (2.10), 6 (2.30)               4            2.20
gn      inner=0.03        2 (2.25), 4 (2.30), diverged after crossing  4 (tie)      2.30
"""

import json
import math
from pathlib import Path

# method -> tokens, grad-eq, seconds, FLOPs per iteration (at 8 micro-batches).
COST = {
    "adamw": (1000, 8.0, 2.0, 2e9),
    "gn": (1500, 10.0, 2.5, 5e9),
    "gauss_newton": (1500, 10.0, 2.5, 5e9),
    "muon": (1000, 8.0, 2.0, 3e9),
    "muon_optax": (1000, 8.0, 2.0, 3e9),
}
ADAMW_A = {"optimizer.learning_rate": 0.001}
ADAMW_B = {"optimizer.learning_rate": 0.003}
GN_X = {"optimizer.gn.inner_learning_rate": 0.01}
GN_Y = {"optimizer.gn.inner_learning_rate": 0.03}
# (method, setting, seed, reach step or None, final loss, status[, stage])
RUNS = [
    ("adamw", ADAMW_A, 0, 8, 2.40, "finished"),
    ("adamw", ADAMW_A, 1, 10, 2.50, "finished"),
    ("adamw", ADAMW_A, 2, None, 2.55, "finished"),
    ("adamw", ADAMW_B, 0, 6, 2.30, "finished"),
    ("adamw", ADAMW_B, 1, 8, 2.35, "finished"),
    ("adamw", ADAMW_B, 2, 10, 2.50, "finished"),
    ("adamw", ADAMW_B, 3, None, 2.90, None),  # Killed: no summary, must be left out.
    ("gn", GN_X, 0, 4, 2.20, "finished"),
    ("gn", GN_X, 1, 4, 2.10, "finished"),
    ("gn", GN_X, 2, 6, 2.30, "finished"),
    ("gn", GN_Y, 0, 2, 2.25, "finished"),
    ("gn", GN_Y, 1, 4, 2.30, "finished"),
    ("gn", GN_Y, 2, 2, 2.00, "diverged"),
]


def eval_losses(reach: int | None, final: float, steps: int = 10) -> dict[int, float]:
    """Validation loss at steps 0, 2, ..., steps for a run reaching 2.5 at ``reach``."""
    losses = {0: 5.0}
    for step in range(2, steps + 1, 2):
        if reach is None:
            losses[step] = final + 0.01 * (steps - step)
        elif step < reach:
            losses[step] = 2.5 + 0.01 * (reach - step)
        elif reach == steps:
            losses[step] = 2.5
        else:
            losses[step] = 2.5 + (final - 2.5) * (step - reach) / (steps - reach)
    return losses


def write_sweep(
    folder: Path,
    runs=RUNS,
    name: str = "fixture",
    scan_key: str | None = None,
    scale: dict[str, float] | None = None,
    flops: bool = True,
    **plan_fields,
) -> Path:
    """Writes plan.json and each run's files; ``scale`` multiplies a method's reach steps.

    With ``scan_key``, a run's setting holds its scan value under that key (left out of the
    plan entry's setting, as the sweep does). A run tuple may carry a 7th element, its stage
    (default ``tuning``). ``flops=False`` writes records without the ``flops`` field (an older
    trainer). ``plan_fields`` (``seeds``, ``headline_seeds``, ``grids``, ``variants``) go into
    plan.json as given.
    """
    entries = []
    for i, (method, setting, seed, reach, final, status, *stage) in enumerate(runs):
        if scale and reach is not None:
            reach = int(round(reach * scale.get(method, 1.0) / 2)) * 2
        run_id = f"{method}-{i:010d}"
        scan_value = setting.get(scan_key) if scan_key else None
        entries.append(
            dict(
                id=run_id,
                method=method,
                setting={k: v for k, v in setting.items() if k != scan_key},
                seed=seed,
                scan_value=scan_value,
                overrides={},
                init_from=None,
                workdir=f"runs/{run_id}",
                stage=stage[0] if stage else "tuning",
            )
        )
        work = folder / "runs" / run_id
        work.mkdir(parents=True)
        micro_batches = int(setting.get(scan_key, 8)) if scan_key else 8
        tokens, grads, secs, flop = (c * micro_batches / 8 for c in COST[method])
        config = {
            "train": {"steps": 10, "eval_every": 2, "target_loss": 2.5},
            "data": {"micro_batch": 5, "seq_len": 25, "micro_batches": micro_batches},
        }
        (work / "config.json").write_text(json.dumps(config))
        lines = []
        for step, loss in eval_losses(reach, final).items():
            if status == "diverged" and step > 2:
                lines.append(
                    dict(
                        kind="train",
                        step=3,
                        tokens=3 * tokens,
                        grad_equivalents=3 * grads,
                        wall_clock=3 * secs,
                        loss=math.nan,
                        **(dict(flops=3 * flop) if flops else {}),
                    )
                )
                break
            lines.append(
                dict(
                    kind="eval",
                    step=step,
                    tokens=step * tokens,
                    grad_equivalents=step * grads,
                    wall_clock=step * secs,
                    val_loss=loss,
                    val_bpb=loss / math.log(2),
                    **(dict(flops=step * flop) if flops else {}),
                )
            )
        text = "\n".join(json.dumps(r) for r in lines) + "\n"
        if status is None:
            text += '{"kind": "eval", "step": 12, "val_lo'  # Half-written last line.
        (work / "metrics.jsonl").write_text(text)
        if status is not None:
            (work / "summary.json").write_text(
                json.dumps(dict(status=status, steps=10, target_loss=2.5))
            )
    plan = dict(
        name=name,
        base="base.py",
        target_loss=2.5,
        baseline="adamw",
        scan_key=scan_key,
        warmup=None,
        runs=entries,
        **plan_fields,
    )
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder


# A batch-size scan with headline seeds and a variant (see tests/report/test_headline.py).
# K = data.micro_batches gives 5 * 25 * K tokens per iteration: 500, 1000, 2000. Tuning seed 0,
# headline seeds 1 and 2. Reach step of seed 0 per grid value (— never):
#
#   method (grid)                      K=4          K=8            K=16
#   adamw lr [1e-3, 3e-3, 1e-2]        —, 10, —     10, 6, 8       8, 6, 8
#   gauss_newton inner [1e-3, 3e-3, 1e-2]  —, 10, —  10, 6, 8      6, 4, 2
#   muon lr [0.01, 0.03]               —, 10        6, 4           —, 6
#
# Headlines: adamw ties at 6 on K=8 and K=16 -> fewer tokens: K=8, lr 3e-3; its headline seeds
# reach at 8 and 10, which would move it to K=16 if they counted. gauss_newton: K=16, inner 1e-2
# (edge: high), headline seeds 2 and 4. muon: K=8, lr 0.03 (edge: high), headline seeds 4 and 6.
# Variant muon_optax of muon at K=8 with seeds 0, 1, 2: lr 0.01 reaches at 4, 6, 6 and lr 0.03
# at 6, 4, 4; seed 0 picks 0.01 (edge: low), though 0.03 has the lower median over all seeds.
SCAN = "data.micro_batches"
LR, INNER = "optimizer.learning_rate", "optimizer.gn.inner_learning_rate"
HEADLINE_GRIDS = {
    "adamw": {LR: [1e-3, 3e-3, 1e-2], "optimizer.weight_decay": [0.1]},
    "gauss_newton": {INNER: [1e-3, 3e-3, 1e-2]},
    "muon": {LR: [0.01, 0.03]},
    "muon_optax": {LR: [0.01, 0.03]},
}
_REACH = {  # method -> K -> reach step of seed 0 per grid value (in grid order)
    "adamw": {4: [None, 10, None], 8: [10, 6, 8], 16: [8, 6, 8]},
    "gauss_newton": {4: [None, 10, None], 8: [10, 6, 8], 16: [6, 4, 2]},
    "muon": {4: [None, 10], 8: [6, 4], 16: [None, 6]},
}
_HEADLINE = {  # method -> (K, grid value, reach steps of headline seeds 1 and 2)
    "adamw": (8, 3e-3, [8, 10]),
    "gauss_newton": (16, 1e-2, [2, 4]),
    "muon": (8, 0.03, [4, 6]),
}


def _setting(method, value, k):
    key = INNER if method == "gauss_newton" else LR
    extra = {"optimizer.weight_decay": 0.1} if method == "adamw" else {}
    return {key: value, **extra, SCAN: k}


def headline_runs():
    """Run tuples of the headline fixture, in plan order (stage 1, then stage 2)."""
    runs = []
    for k in (4, 8, 16):
        for method, by_k in _REACH.items():
            grid = next(iter(HEADLINE_GRIDS[method].values()))
            for value, reach in zip(grid, by_k[k], strict=True):
                final = 2.3 if reach else 2.6  # Never reaching: above the target at the end.
                runs.append((method, _setting(method, value, k), 0, reach, final, "finished"))
    for method, (k, value, reaches) in _HEADLINE.items():
        for seed, reach in zip((1, 2), reaches, strict=True):
            runs.append(
                (method, _setting(method, value, k), seed, reach, 2.3, "finished", "headline")
            )
    for value, reaches in ((0.01, [4, 6, 6]), (0.03, [6, 4, 4])):
        for seed, reach in enumerate(reaches):
            runs.append(
                ("muon_optax", {LR: value, SCAN: 8}, seed, reach, 2.3, "finished", "variant")
            )
    return runs


def write_headline_sweep(folder: Path, **kwargs) -> Path:
    """The headline fixture as a sweep folder (kwargs go to :func:`write_sweep`)."""
    fields = dict(
        name="headline",
        scan_key=SCAN,
        seeds=[0],
        headline_seeds=[1, 2],
        grids=HEADLINE_GRIDS,
        variants={"muon_optax": "muon"},
    )
    fields.update(kwargs)
    return write_sweep(folder, runs=headline_runs(), **fields)
