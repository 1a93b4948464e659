"""benchmarks/accelerator_check.py --tiny in a subprocess that cannot import the bench stack:
the report has every section, only finite numbers, and every numerical check passed."""

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator_check.py"
# absl is not here: optax itself imports it.
BENCH_STACK = (
    "wandb", "grain", "orbax", "ml_collections", "tqdm", "matplotlib", "tokenizers", "tiktoken",
    "pytest",
)  # fmt: skip
METHODS = {"adamw", "muon", "soap", "gauss_newton", "layerwise_gn", "gn_prox_linear"}
# Runs the script with a sys.meta_path finder refusing ``blocked``; then fails (exit 3) if any
# blocked module got imported anyway (e.g. already by site).
WRAPPER = """
import importlib.abc, runpy, sys
blocked, script, *args = sys.argv[1:]
blocked = set(blocked.split(","))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is blocked in this test", name=name)
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
leaked = sorted(m for m in sys.modules if m.partition(".")[0] in blocked)
if leaked:
    print("imported despite the blocker:", leaked)
    sys.exit(3)
sys.exit(code)
"""


def run_blocked(blocked, *args, timeout=540):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, ",".join(blocked), str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def numbers(tree, path=""):
    """``(path, number)`` for every number in a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield path, tree


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator_check")
    proc = run_blocked(BENCH_STACK, "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_report_has_every_section_with_finite_numbers(tiny_report):
    out, report = tiny_report
    for section in ("environment", "precision", "numerics", "peaks", "speed", "training"):
        assert report[section], section
    bad = [(p, x) for p, x in numbers(report) if not math.isfinite(x)]
    assert not bad, bad
    assert report["environment"]["backend"] == "cpu"
    assert report["notes"] == [], report["notes"]  # Nothing skipped by the time guard.
    md = (out / "report.md").read_text()
    assert all(name in md for name in METHODS)


@pytest.mark.slow
def test_numerical_checks_passed_in_float32_and_float64(tiny_report):
    _, report = tiny_report
    ran = {(r["name"], r["dtype"]) for r in report["numerics"]}
    checks = {"soap", "muon", "gn_vector_product", "gn_inner_solve"}
    assert ran == {(c, d) for c in checks for d in ("float32", "float64")}
    for r in report["numerics"]:
        assert r["passed"] is True and 0 <= r["rel_error"] <= r["tolerance"], r
    assert report["numerics_passed"] is True


@pytest.mark.slow
def test_every_method_measured_and_trained(tiny_report):
    _, report = tiny_report
    assert set(report["speed"]) == METHODS
    for name, r in report["speed"].items():
        assert r["step_s_median"] > 0 and r["train_tokens_per_s"] > 0, name
        assert r["step_flops"] > 0, name
        assert set(r["fraction_of_peak"]) == {"bfloat16", "float32_highest", "float32_default"}
        assert all(f > 0 for f in r["fraction_of_peak"].values()), name
        assert r["attempts"][-1] == {"micro_batch": r["micro_batch"], "result": "fits"}
    # GN's step does more work than AdamW's: the FLOP counts are not all the same number.
    assert report["speed"]["gauss_newton"]["step_flops"] > report["speed"]["adamw"]["step_flops"]
    training = report["training"]
    assert set(training["methods"]) == METHODS
    start = training["val_loss_after_warmup"]
    for name, m in training["methods"].items():
        curve = m["curve"]
        assert [c["iteration"] for c in curve] == list(range(1, report["iterations"] + 1))
        assert curve[-1]["val_loss"] < start, (name, start, curve)


@pytest.mark.slow
def test_refuses_to_overwrite_a_report(tiny_report):
    out, _ = tiny_report
    proc = run_blocked(BENCH_STACK, "--tiny", "--out", str(out), timeout=120)
    assert proc.returncode == 2
    assert "exists; pass --overwrite" in proc.stdout


def test_names_a_missing_package_in_one_line(tmp_path):
    proc = run_blocked(("optax",), "--tiny", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "accelerator_check: missing package(s) optax; install them first"
    ]


@pytest.fixture
def bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import accelerator_setup
    import accelerator_speed

    return accelerator_setup, accelerator_speed


def test_oom_search_takes_the_largest_micro_batch_that_fits(bench_modules, monkeypatch):
    setup, speed = bench_modules
    tried = []

    class FakeStep:
        def __init__(self, b):
            self.micro_batch = b

        def compiled(self, state, *batches):
            return state, {"loss": 0.0}

    def fake_build(name, model_cfg, mesh, *, micro_batch, **_):
        tried.append(micro_batch)
        if micro_batch > 2:  # What XLA raises when a step does not fit.
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")
        return FakeStep(micro_batch), "state"

    monkeypatch.setattr(speed, "build_step", fake_build)
    monkeypatch.setattr(speed, "random_batches", lambda *a: [])
    model_cfg = types.SimpleNamespace(vocab_size=8)
    step, state, attempts = speed.fit_step(
        "adamw", model_cfg, None, micro_batches=[8, 4, 2, 1], seq_len=4, k=1,
        budget=setup.Budget(60), estimate_s=0,
    )  # fmt: skip
    assert tried == [8, 4, 2] and step.micro_batch == 2 and state == "state"
    assert [a["result"] for a in attempts] == ["out of memory"] * 2 + ["fits"]

    def broken(*a, **k):
        raise ValueError("unknown optimizer 'x'")

    monkeypatch.setattr(speed, "build_step", broken)
    with pytest.raises(ValueError, match="unknown optimizer"):  # Not an OOM: not swallowed.
        speed.fit_step(
            "x", model_cfg, None, micro_batches=[2], seq_len=4, k=1,
            budget=setup.Budget(60), estimate_s=0,
        )  # fmt: skip


def test_time_guard_skips_with_a_note(bench_modules):
    setup, speed = bench_modules
    budget = setup.Budget(limit_s=1.0)
    budget.check("cheap work", estimate_s=0.1)
    with pytest.raises(setup.BudgetExceeded, match="skipped training soap: .* budget 1 s"):
        budget.check("training soap", estimate_s=5.0)
    assert len(budget.notes) == 1
    results, steps = speed.measure_all(
        ("adamw",), None, None, micro_batches=[1], seq_len=4, k=1, repeats=1, peaks={},
        budget=setup.Budget(limit_s=-1.0),
    )  # fmt: skip
    assert steps == {} and "skipped adamw at micro-batch 1" in results["adamw"]["skipped"]


def test_base_config_without_ml_collections(bench_modules):
    setup, _ = bench_modules
    cfg = setup.optimizer_config("gauss_newton", {"gn.damping": 0.5})
    assert cfg.name == "gauss_newton" and cfg.gn.damping == 0.5 and "gn" in cfg
    with pytest.raises(KeyError, match="no field 'gn.dampng'"):
        setup.optimizer_config("gauss_newton", {"gn.dampng": 0.5})
