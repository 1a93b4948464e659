"""A hand-made sweep folder whose report numbers are worked out by hand in the tests.

Target 2.5, budget 10 iterations, evaluation every 2. A run "reaching at step s" has evaluations
above the target before ``s`` and exactly ``2.5`` at ``s`` (so ``<=`` is what counts), then falls
linearly to its final loss. Costs per iteration: AdamW 1000 tokens, 8 grad-eq, 2 s; GN 1500
tokens (line search included), 10 grad-eq, 2.5 s.

method  setting           reach step (final loss) of seeds 0, 1, 2     median iter  median final
adamw   lr=0.001          8 (2.40), 10 (2.45), never (2.55)            10           2.45
adamw   lr=0.003 (tuned)  6 (2.30), 8 (2.35), 10 (2.45); seed 3 unfinished  8       2.35
gn      inner=0.01 (tuned)  4 (2.20), 4 (2.10), 6 (2.30)               4            2.20
gn      inner=0.03        2 (2.25), 4 (2.30), diverged after crossing  4 (tie)      2.30
"""

import json
import math
from pathlib import Path

COST = {"adamw": (1000, 8.0, 2.0), "gn": (1500, 10.0, 2.5)}
ADAMW_A = {"optimizer.learning_rate": 0.001}
ADAMW_B = {"optimizer.learning_rate": 0.003}
GN_X = {"optimizer.gn.inner_learning_rate": 0.01}
GN_Y = {"optimizer.gn.inner_learning_rate": 0.03}
# (method, setting, seed, reach step or None, final loss, status)
RUNS = [
    ("adamw", ADAMW_A, 0, 8, 2.40, "finished"),
    ("adamw", ADAMW_A, 1, 10, 2.45, "finished"),
    ("adamw", ADAMW_A, 2, None, 2.55, "finished"),
    ("adamw", ADAMW_B, 0, 6, 2.30, "finished"),
    ("adamw", ADAMW_B, 1, 8, 2.35, "finished"),
    ("adamw", ADAMW_B, 2, 10, 2.45, "finished"),
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
            losses[step] = final
        else:
            losses[step] = 2.5 + (final - 2.5) * (step - reach) / (steps - reach)
    return losses


def write_sweep(
    folder: Path,
    runs=RUNS,
    name: str = "fixture",
    scan_key: str | None = None,
    scale: dict[str, float] | None = None,
) -> Path:
    """Writes plan.json and each run's files; ``scale`` multiplies a method's reach steps."""
    entries = []
    for i, (method, setting, seed, reach, final, status) in enumerate(runs):
        if scale and reach is not None:
            reach = int(round(reach * scale.get(method, 1.0) / 2)) * 2
        run_id = f"{method}-{i:010d}"
        scan_value = setting.get(scan_key) if scan_key else None
        entries.append(
            dict(
                id=run_id,
                method=method,
                setting=setting,
                seed=seed,
                scan_value=scan_value,
                overrides={},
                init_from=None,
                workdir=f"runs/{run_id}",
            )
        )
        work = folder / "runs" / run_id
        work.mkdir(parents=True)
        tokens, grads, secs = COST[method]
        micro_batches = int(setting.get(scan_key, 8)) if scan_key else 8
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
    )
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder
