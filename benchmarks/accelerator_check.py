"""Accelerator check: numerics, speed and a short training run of every method on this machine.

Made for a machine with GPUs/TPUs and only jax, flax, optax and numpy installed (no network, no
wandb/orbax/grain/ml_collections/...): it imports nothing else, and names a missing package in
one line. On one device it

(a) runs the optimizers' numerical checks at the pinned precision against float64 NumPy
    references, in float32 and (where the backend has it) float64 (``accelerator_numerics``);
(b) measures every method on the 45M model at T=1024 with the largest micro-batch that fits:
    step time, tokens/s, XLA's FLOPs as a fraction of this device's bfloat16 and float32 matmul
    peaks, memory (``accelerator_speed``);
(c) warms up with AdamW and continues every method from the same parameters on the standard
    library's Python sources, recording the loss curves (``accelerator_training``);

and writes ``report.json`` and ``report.md`` under ``--out``. A time guard skips what would run
past ``--budget-s`` (default 450 s), with a note. ``--tiny`` runs the same code on the tiny model
on CPU in about a minute, with XLA's CPU optimizations lowered to compile faster
(``tests/test_accelerator_check.py``). Exit status 1 if a numerical check fails.

Usage:
  python benchmarks/accelerator_check.py                       # on the accelerator machine
  python benchmarks/accelerator_check.py --tiny --out /tmp/ac  # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

REQUIRED = ("jax", "flax", "optax", "numpy")
HERE = Path(__file__).resolve().parent
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
PROFILES = {  # What --tiny changes.
    "accelerator": dict(
        model="45m", seq_len=1024, k=2, max_micro_batch=64, repeats=5, matmul_size=8192,
        warmup_steps=4, iterations=6, val_batches=4, corpus_bytes=8 << 20,
    ),
    "tiny": dict(
        model="tiny", seq_len=32, k=1, max_micro_batch=8, repeats=3, matmul_size=256,
        warmup_steps=2, iterations=3, val_batches=2, corpus_bytes=1 << 18,
    ),
}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/accelerator_check", help="report folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (a smoke run)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--budget-s", type=float, default=450.0, help="time guard (seconds)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all six)")
    for key, value in PROFILES["accelerator"].items():
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=None, help=f"default {value}")
    args = parser.parse_args(argv)
    profile = PROFILES["tiny" if args.tiny else "accelerator"]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def finite(tree: Any) -> bool:
    """Whether every number in a JSON-like tree is finite."""
    if isinstance(tree, dict):
        return all(finite(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return all(finite(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


def fmt(x: Any, spec: str = ".3g", scale: float = 1.0) -> str:
    """``x / scale`` formatted, or ``x`` as it is when it is not a number (``"n/a"``)."""
    return format(x / scale, spec) if isinstance(x, int | float) else str(x)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    env, lines = report["environment"], []
    lines += [
        "# Accelerator check",
        "",
        f"{env['device_count']} x {env['device_kind']} ({env['backend']}); jax {env['jax']}, "
        f"flax {env['flax']}, optax {env['optax']}; model {env['model']} ({env['dtype']}), "
        f"T={env['seq_len']}, K={env['k']}; {report['elapsed_s']:.0f} s.",
        "",
        "## Precision",
        "",
        f"Pinned: {report['precision']['settings']}. float32 matmul relative error vs float64 "
        f"on this device: {report['precision']['float32_matmul_rel_error']}.",
        "",
        "## (a) Numerics vs float64 NumPy references",
        "",
        "| check | dtype | relative error | tolerance | result |",
        "|---|---|---:|---:|---|",
    ]
    for r in report["numerics"]:
        result = r.get("skipped") or ("pass" if r["passed"] else "FAIL")
        err = fmt(r["rel_error"])
        lines.append(f"| {r['name']} | {r['dtype']} | {err} | {r['tolerance']:g} | {result} |")
    peaks = report["peaks"]
    lines += [
        "",
        "## (b) Speed",
        "",
        "Matmul peaks (TFLOP/s): "
        + ", ".join(f"{k} {v / 1e12:.3g}" for k, v in peaks.items())
        + ". Steps compiled with every loop unrolled (XLA counts all FLOPs); memory: XLA's "
        "temp bytes of the step, and the process high-water mark after the method.",
        "",
        "| method | micro-batch | ms/step | tokens/s | TFLOP/step | TFLOP/s | "
        + " | ".join(f"of {k}" for k in peaks)
        + " | temp GB | peak GB |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(peaks) + "---:|---:|",
    ]
    for name, r in report["speed"].items():
        if "skipped" in r:
            lines.append(f"| {name} | {r['skipped']} |")
            continue
        frac = r["fraction_of_peak"]
        fracs = [fmt(frac[k], ".1%") if isinstance(frac, dict) else "n/a" for k in peaks]
        mem = r["xla_memory_bytes"]
        cells = [
            name,
            str(r["micro_batch"]),
            fmt(r["step_s_median"], ".1f", 1e-3),
            fmt(r["train_tokens_per_s"]),
            fmt(r["step_flops"], scale=1e12),
            fmt(r["flop_per_s"], scale=1e12),
            *fracs,
            fmt(mem["temp"] if isinstance(mem, dict) else mem, scale=1e9),
            fmt(r["process_peak_bytes"], scale=1e9),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    tr = report["training"]
    lines += ["", "## (c) Training from a shared AdamW warm-up", ""]
    if "skipped" in tr:
        lines.append(tr["skipped"])
    else:
        its = report["iterations"]
        lines += [
            f"Corpus: {tr['corpus']}. Warm-up losses {[round(x, 3) for x in tr['warmup_losses']]}, "
            f"then validation loss {tr['val_loss_after_warmup']:.3f}. Validation loss per outer "
            "iteration (train loss in brackets):",
            "",
            "| method | micro-batch | " + " | ".join(f"it {i + 1}" for i in range(its)) + " |",
            "|---|---:|" + "---:|" * its,
        ]
        for name, m in tr["methods"].items():
            if "skipped" in m:
                lines.append(f"| {name} | {m['skipped']} |")
                continue
            cells = [f"{c['val_loss']:.3f} ({c['train_loss']:.3f})" for c in m["curve"]]
            lines.append(f"| {name} | {m['micro_batch']} | " + " | ".join(cells) + " |")
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the three parts and returns the report."""
    if args.tiny:  # CPU, and compile fast: a smoke run's speed numbers mean nothing anyway.
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
    import accelerator_numerics as numerics
    import accelerator_speed as speed
    import accelerator_training as training
    import flax
    import jax
    import numpy as np
    import optax
    from accelerator_setup import METHODS, Budget

    from gnbench.model import get_model_config
    from gnbench.model.sharding import make_mesh
    from gnbench.optim import precision

    budget = Budget(args.budget_s)
    device = jax.devices()[0]
    mesh = make_mesh(1, 1, [device])
    model_cfg = get_model_config(args.model, dtype=args.dtype)
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    if "adamw" not in methods:
        raise SystemExit("accelerator_check: --methods must include adamw (the shared warm-up)")
    env = dict(
        python=platform.python_version(), jax=jax.__version__, flax=flax.__version__,
        optax=optax.__version__, numpy=np.__version__, backend=jax.default_backend(),
        device_kind=device.device_kind, device_count=jax.device_count(), model=args.model,
        dtype=args.dtype, seq_len=args.seq_len, k=args.k,
    )  # fmt: skip
    report: dict[str, Any] = dict(environment=env, iterations=args.iterations)
    report["precision"] = dict(
        settings=dict(
            soap=precision.SOAP,
            curvature=precision.CURVATURE,
            newton_schulz_dtype=precision.NEWTON_SCHULZ_DTYPE,
        ),
        float32_matmul_rel_error=numerics.matmul_errors(),
    )

    def guarded(label, thunk):
        budget.check(f"numerics {label}")
        return thunk()

    timings = report["timings_s"] = {}
    report["numerics"] = numerics.run_all(guarded)
    timings["numerics"] = budget.elapsed()
    report["peaks"] = speed.matmul_peaks(args.matmul_size, args.repeats)
    timings["peaks"] = budget.elapsed() - sum(timings.values())
    sizes = [2**i for i in range(int(math.log2(args.max_micro_batch)), -1, -1)]
    report["speed"], steps = speed.measure_all(
        methods, model_cfg, mesh, micro_batches=sizes, seq_len=args.seq_len, k=args.k,
        repeats=args.repeats, peaks=report["peaks"], budget=budget,
    )  # fmt: skip
    timings["speed"] = budget.elapsed() - sum(timings.values())
    if "adamw" in steps:
        report["training"] = training.train_curves(
            steps, model_cfg, mesh, corpus_bytes=args.corpus_bytes,
            warmup_steps=args.warmup_steps, iterations=args.iterations,
            val_batches=args.val_batches, budget=budget,
            step_seconds={n: r["step_s_median"] for n, r in report["speed"].items() if n in steps},
        )  # fmt: skip
    else:
        report["training"] = dict(skipped="AdamW's step was not measured: no shared warm-up")
    timings["training"] = budget.elapsed() - sum(timings.values())
    report["notes"] = budget.notes
    report["elapsed_s"] = budget.elapsed()
    report["numerics_passed"] = all(r["passed"] is not False for r in report["numerics"])
    return report


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    missing = [m for m in REQUIRED if not _importable(m)]
    if missing:
        print(f"accelerator_check: missing package(s) {', '.join(missing)}; install them first")
        return 2
    args = parse_args(argv)
    out = Path(args.out)
    existing = [p for p in (out / "report.json", out / "report.md") if p.exists()]
    if existing and not args.overwrite:
        print(f"accelerator_check: {existing[0]} exists; pass --overwrite to replace it")
        return 2
    sys.path[:0] = [str(HERE), str(HERE.parent)]  # accelerator_*, gnbench and tests (refs).
    try:
        report = run(args)
    except ImportError as e:
        print(f"accelerator_check: cannot import {e.name or e}: {e}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    print(f"accelerator_check: report in {out}/report.md and report.json")
    return 0 if report["numerics_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
