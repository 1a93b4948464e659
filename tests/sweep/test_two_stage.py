"""Two-stage sweeps: headline seeds at each method's best batch size and variants at their
reference's, planned from the stage-1 results, run by the same executor, idempotent on rerun.

The fake trainer's effective learning rate is ``lr * (K / 10) ** fake.batch_power`` with
K = data.micro_batches (5, 10, 20: 500, 1000, 2000 tokens per iteration), and seed 0 reaches the
target 2.5 at the first even step >= ln 6 / lr_eff (evaluations every 2 of 10 iterations):

    adamw (batch_power 1)  lr 0.1: never, never, 10;  lr 0.3: never, 6, 4  -> K=20, lr 0.3
    soap (batch_power 0)   lr 0.5: 4, 4, 4                          -> tie: K=5 (fewest tokens)
The report counts the fractional crossing between the evaluations around it (`_fake_crossing`).
"""

import json
import math
import sys

import pytest

from gnbench.report.table import fmt
from gnbench.sweep import SweepError, load_sweep_file, make_plan
from gnbench.sweep.cli import main
from tests.sweep.test_sweep import FAKE, invocations, write_sweep

LR = "optimizer.learning_rate"
TWO_STAGE = dict(
    overrides={"train.steps": 10, "fake.batch_power": 1.0},
    methods={
        "adamw": {"grid": {LR: [0.1, 0.3]}},
        "soap": {"overrides": {LR: 0.5, "fake.batch_power": 0.0}},
    },
    seeds=[0],
    headline_seeds=[1, 2],
    variants={"adamw_v": {"of": "adamw", "overrides": {"optimizer.name": "adamw"}}},
    scan={"key": "data.micro_batches", "values": [5, 10, 20]},
)


def _fake_crossing(lr: float, seed: int, target: float = 2.5, every: int = 2) -> float:
    """The fractional crossing of the fake trainer's loss 2 + 3 exp(-lr s) + 0.01 seed,
    evaluated every ``every`` steps: linear in the loss between the two evaluations around it."""
    loss = lambda s: 2.0 + 3.0 * math.exp(-lr * s) + 0.01 * seed  # noqa: E731
    step = next(s for s in range(0, 100, every) if loss(s) <= target)
    before = step - every
    return before + every * (loss(before) - target) / (loss(before) - loss(step))


def _cell(steps: list[float]) -> str:
    """median [min, max] as the report prints iterations."""
    return f"{fmt(sorted(steps)[1], 'step')} [{fmt(min(steps), 'step')}, {fmt(max(steps), 'step')}]"


def _entries(plan_json, stage):
    return sorted(
        (e["method"], e["scan_value"], json.dumps(e["setting"], sort_keys=True), e["seed"])
        for e in plan_json["runs"]
        if e["stage"] == stage
    )


def test_spec_checks_headline_seeds_and_variants(tmp_path):
    with pytest.raises(SweepError, match=r"headline_seeds \[1\] are already tuning seeds"):
        load_sweep_file(write_sweep(tmp_path, headline_seeds=[1, 2]))  # seeds: [0, 1]
    with pytest.raises(SweepError, match="headline_seeds: seed 'one' is not an integer"):
        load_sweep_file(write_sweep(tmp_path, headline_seeds=["one"]))
    with pytest.raises(SweepError, match="headline_seeds: seeds \\[3\\] appear more than once"):
        load_sweep_file(write_sweep(tmp_path, headline_seeds=[3, 3]))
    with pytest.raises(SweepError, match="'of' must name one of the methods.*'sgd'"):
        load_sweep_file(write_sweep(tmp_path, variants={"v": {"of": "sgd"}}))
    with pytest.raises(SweepError, match="variant 'soap' is also a method"):
        load_sweep_file(write_sweep(tmp_path, variants={"soap": {"of": "adamw"}}))
    with pytest.raises(SweepError, match=r"variant 'v': unknown fields \['gird'\]"):
        load_sweep_file(write_sweep(tmp_path, variants={"v": {"of": "adamw", "gird": {}}}))
    with pytest.raises(SweepError, match="optimizer.learnig_rate"):
        bad = {"v": {"of": "adamw", "grid": {"optimizer.learnig_rate": [0.1]}}}
        load_sweep_file(write_sweep(tmp_path, variants=bad))
    with pytest.raises(
        SweepError, match=r"variant 'v' grid optimizer.learning_rate: values \[0.1\]"
    ):
        bad = {"v": {"of": "adamw", "grid": {LR: [0.1, 0.3, 0.1]}}}
        load_sweep_file(write_sweep(tmp_path, variants=bad))
    spec = load_sweep_file(write_sweep(tmp_path, **TWO_STAGE))
    v = spec.variants["adamw_v"]
    assert v.of == "adamw" and v.grid == {LR: [0.1, 0.3]}  # The reference's grid by default.
    assert v.overrides == {"optimizer.name": "adamw"}  # A variant names a known optimizer.
    plan = make_plan(spec)
    assert {r.stage for r in plan.runs} == {"tuning"} and len(plan.runs) == 3 * 3
    assert plan.grids == {"adamw": {LR: [0.1, 0.3]}, "soap": {}, "adamw_v": {LR: [0.1, 0.3]}}


def test_dry_run_prints_stage_1_and_says_stage_2_follows(tmp_path, capsys):
    path = write_sweep(tmp_path, **TWO_STAGE)
    out = tmp_path / "out"
    assert main([str(path), "--executor", "dry-run", "--out", str(out)], trainer_cmd=FAKE) == 0
    text = capsys.readouterr().out
    assert text.count("$ ") == 9
    assert "stage 2 (headline seeds [1, 2]" in text and "adamw_v (of adamw)" in text
    assert "planned from stage-1 results" in text and not out.exists()


@pytest.mark.slow
def test_two_stage_sweep_plans_runs_and_reruns_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path, **TWO_STAGE)
    out = tmp_path / "out"
    argv = [str(path), "--out", str(out), "--parallel", "2"]
    assert main(argv, trainer_cmd=FAKE) == 0
    sweep_dir = out / "fake"
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert plan["seeds"] == [0] and plan["headline_seeds"] == [1, 2]
    assert plan["grids"] == {"adamw": {LR: [0.1, 0.3]}, "soap": {}, "adamw_v": {LR: [0.1, 0.3]}}
    assert plan["variants"] == {"adamw_v": "adamw"}
    assert len(_entries(plan, "tuning")) == 9
    lr3 = json.dumps({LR: 0.3})
    assert _entries(plan, "headline") == [
        ("adamw", 20, lr3, 1),
        ("adamw", 20, lr3, 2),
        ("soap", 5, "{}", 1),
        ("soap", 5, "{}", 2),
    ]
    assert _entries(plan, "variant") == sorted(
        ("adamw_v", 20, json.dumps({LR: lr}), seed) for lr in (0.1, 0.3) for seed in (0, 1, 2)
    )
    # Ids hashed like any run: the same run planned in stage 1 of a sweep with more seeds.
    wide = {**TWO_STAGE, "seeds": [0, 1, 2], "headline_seeds": [], "variants": {}}
    (tmp_path / "wide").mkdir()
    wide = make_plan(load_sweep_file(write_sweep(tmp_path / "wide", **wide)))
    wide_ids = {r.id for r in wide.runs}
    assert all(e["id"] in wide_ids for e in plan["runs"] if e["stage"] == "headline")
    calls = invocations(sweep_dir)
    assert len(calls) == 9 + 4 + 6
    assert all(v == ["start", "finish"] for v in calls.values())
    report = (sweep_dir / "report.md").read_text()
    assert "## Headline: each method at its own best batch size" in report
    adamw = _cell([_fake_crossing(0.3 * 20 / 10, seed) for seed in (0, 1, 2)])
    assert f"| adamw | 2k | learning_rate=0.3 (edge: high) | 3/3 | {adamw} |" in report
    soap = _cell([_fake_crossing(0.5, seed) for seed in (0, 1, 2)])
    assert f"| soap | 500 | (defaults) | 3/3 | {soap} |" in report
    assert f"| adamw_v | adamw | 2k | learning_rate=0.3 (edge: high) | {adamw} | 3/3 |" in report
    assert "— [—, —]" in report  # The fake trainer logs no FLOPs.
    # A rerun of the same command is idempotent: nothing launched, the same plan.
    plan_text = (sweep_dir / "plan.json").read_text()
    capsys.readouterr()
    assert main(argv + ["--no-report"], trainer_cmd=FAKE) == 0
    assert invocations(sweep_dir) == calls
    assert (sweep_dir / "plan.json").read_text() == plan_text
    assert "stage 2:" not in capsys.readouterr().err
    # The dry-run now shows the stage-2 runs too, all finished.
    assert main([str(path), "--executor", "dry-run", "--out", str(out)], trainer_cmd=FAKE) == 0
    text = capsys.readouterr().out
    assert text.count("$ ") == 19 and text.count("[finished]") == 19
    assert text.count("(headline)") == 4 and text.count("(variant)") == 6


def test_a_failed_stage_1_run_holds_only_its_method_and_is_not_retried_twice(tmp_path, capsys):
    methods = {
        "adamw": {"grid": {LR: [0.3]}},
        "muon": {"overrides": {"fake.crash": True}},
    }
    path = write_sweep(tmp_path, methods=methods, seeds=[0], headline_seeds=[1])
    out = tmp_path / "out"
    argv = [str(path), "--out", str(out), "--no-report"]
    assert main(argv, trainer_cmd=FAKE) == 1
    assert "stage 2 of muon waits for its 1 stage-1 runs not done yet" in capsys.readouterr().err
    sweep_dir = out / "fake"
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert [(e["method"], e["seed"]) for e in plan["runs"] if e["stage"] == "headline"] == [
        ("adamw", 1)
    ]
    calls = invocations(sweep_dir)
    broken = next(e["id"] for e in plan["runs"] if e["method"] == "muon")
    assert calls[broken] == ["start"]  # Not launched again by stage 2 in the same command.
    assert main(argv, trainer_cmd=FAKE) == 1  # A rerun retries it, and only it.
    again = invocations(sweep_dir)
    assert again[broken] == ["start", "start"]
    assert {k: v for k, v in again.items() if k != broken} == {
        k: v for k, v in calls.items() if k != broken
    }


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
