"""Batch-size scan on the tiny model: iterations to target against tokens per iteration.

    gnbench sweep experiments/batch_scan_tiny.py           # 2 methods x 4 batches x 2 lrs x 2 seeds
    gnbench sweep experiments/batch_scan_tiny.py --quick   # 2 methods x 2 batches, 1 seed

Scans K = data.micro_batches (micro-batches of 16 x 64 tokens per iteration: 4k to 33k tokens)
for AdamW and full GN, each tuned at every K (the report tunes each scan value on its own).
The paper's finding to look for: AdamW stops saving iterations past a small critical batch while
GN keeps improving (FACTS.md's pilot: AdamW 2.61 at K=8 and 2.60 at K=32; GN 2.45 -> 2.14).
Larger K lowers GN's best inner lr (1e-2 diverged at K=32), so the grid spans 1e-3 and 3e-3.

Target 2.65 nats/token, as in compare_tiny.py (AdamW at lr 3e-3 reaches it at iteration 28 of 40
at K=8; small K may not reach it, which the plot shows as a missing point).
"""


def get_sweep(quick: bool = False) -> dict:
    methods = {
        "adamw": {"grid": {"optimizer.learning_rate": [3e-3, 1e-2]}},
        "gauss_newton": {"grid": {"optimizer.gn.inner_learning_rate": [1e-3, 3e-3]}},
    }
    if quick:
        methods = {
            "adamw": {},
            "gauss_newton": {"grid": {"optimizer.gn.inner_learning_rate": [1e-3]}},
        }
    return dict(
        name="batch_scan_tiny_quick" if quick else "batch_scan_tiny",
        base="tiny.py",
        # The quick variant is a smoke test: fewer iterations, no wandb.
        overrides={"train.steps": 20, "wandb.mode": "disabled"} if quick else {},
        methods=methods,
        seeds=[0] if quick else [0, 1],
        target_loss=2.8 if quick else 2.65,
        scan={"key": "data.micro_batches", "values": [4, 16] if quick else [4, 8, 16, 32]},
    )
