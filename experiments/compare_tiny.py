"""A fixed-batch comparison: every method at one batch (8k tokens per iteration), tiny model.

    gnbench sweep experiments/compare_tiny.py            # 27 runs, ~25 min on 2 cores
    gnbench sweep experiments/compare_tiny.py --quick    # 6 runs, < 5 min

This was `make bench` until 2026-12-01; the benchmark is now experiments/critical_batch_tiny.py,
which compares each method at its own best batch, as the paper does. At one small batch
first-order methods still gain from more data per iteration, so this file measures a different
quantity; it stays as an example of a plain sweep.

Model "tiny" on byte-level Shakespeare (experiments/tiny.py): 40 iterations of K=8 micro-batches
of 16 x 64 tokens, evaluation every 2 iterations, three seeds per setting (with 3 vs 3 seeds the
one-sided exact Mann-Whitney test can reach p = 0.05; with 2 vs 2 it never goes below 0.17).

Grids. The baselines (AdamW, Muon, SOAP) get two learning rates each, placed where a wider scan
on 2026-11-24 (3 seeds each) found their best: AdamW 3e-3 (1e-2 never reaches the target; a
pilot had 3e-3 beating 1e-3), Muon 0.1 and 0.3 (tied at 16 iterations; 0.03 needs 18 and 0.01
needs 26), SOAP 1e-2 (3e-3 and 3e-2 never reach it). The GN family gets one setting, inner lr
3e-3 (the base default), with the base config's line search. Best settings sit on grid edges
here (the report flags them); critical_batch_tiny.py has interior optima.

Target 2.65 nats/token. Measured on this model (seed 0, K=8): AdamW at lr 3e-3 crosses 2.65 at
iteration 28 and ends at 2.55 after 40; full GN crosses it at iteration 8 and is at 2.29 by 20.
A target tuned AdamW only meets in its last evaluation would make its cost the budget itself
(or infinity for an unlucky seed or learning rate); 2.65 leaves it ~12 iterations of margin, so
every good method's iterations-to-target is measured rather than clipped.
"""

TARGET = 2.65


def get_sweep(quick: bool = False) -> dict:
    if quick:
        # Smoke test of the whole pipeline: every method once, one seed, 20 iterations. The
        # target is looser; measured 2026-11-24: AdamW ends at 2.86 without reaching it (so
        # speedups are lower bounds), Muon crosses at 16, GN and prox-linear at 6, layerwise at 14.
        return dict(
            name="compare_tiny_quick",
            base="tiny.py",
            overrides={"train.steps": 20, "wandb.mode": "disabled"},  # Smoke test: no wandb.
            methods={m: {} for m in METHODS}
            | {"muon": {"overrides": {"optimizer.learning_rate": 0.02}}},
            seeds=[0],
            target_loss=2.8,
        )
    return dict(
        name="compare_tiny",
        base="tiny.py",
        overrides={},  # wandb follows the base config (auto: online with a key, else offline).
        methods={
            # Baselines get two learning rates each; the GN family one setting (the pilot's inner
            # lr, the base default). Under-tuning GN can only understate its speedup.
            "adamw": {"grid": {"optimizer.learning_rate": [3e-3, 1e-2]}},
            "muon": {"grid": {"optimizer.learning_rate": [0.1, 0.3]}},
            "soap": {"grid": {"optimizer.learning_rate": [1e-2, 3e-2]}},
            "gauss_newton": {"grid": {"optimizer.gn.inner_learning_rate": [3e-3]}},
            "gn_prox_linear": {"grid": {"optimizer.gn.inner_learning_rate": [3e-3]}},
            "layerwise_gn": {"grid": {"optimizer.gn.inner_learning_rate": [3e-3]}},
        },
        seeds=[0, 1, 2],
        target_loss=TARGET,
    )


METHODS = ("adamw", "muon", "soap", "gauss_newton", "gn_prox_linear", "layerwise_gn")
