"""``gnbench ladder``: the ladder's sweep plus the outside method, the rungs' runs reused by
identity, and the method's row printed with its gap closed."""

import json
import math
from pathlib import Path

import pytest

from gnbench.cli import main as cli_main
from gnbench.sweep.cli import full_plan
from gnbench.sweep.ladder import DEFAULT_GRID, LR, ROW_FILE, ladder_sweep, main
from gnbench.sweep.plan import make_plan
from gnbench.sweep.spec import REPO_ROOT, SweepError, load_sweep_file
from tests.sweep.test_sweep import FAKE

LADDER = REPO_ROOT / "experiments" / "ladder_tiny.py"
LION_CONFIG = REPO_ROOT / "examples" / "my_optimizers" / "lion_config.py"
LION = "examples/my_optimizers/lion.py:lion"


def test_the_ladder_spec_is_the_ladders_rungs_plus_the_method_on_its_grid():
    spec, notes = ladder_sweep("optax:lion", grid={LR: [1e-4, 3e-4, 1e-3]})
    ladder = load_sweep_file(LADDER)
    assert list(spec.methods) == [*ladder.methods, "lion"] and not notes
    lion = spec.methods["lion"]
    assert lion.grid == {LR: [1e-4, 3e-4, 1e-3]}
    assert lion.overrides["optimizer.name"] == "optax:lion"
    assert (spec.scan_key, spec.scan_values, spec.seeds) == (
        ladder.scan_key,
        ladder.scan_values,
        ladder.seeds,
    )
    assert (spec.name, spec.reuse) == ("ladder_lion", ["ladder_tiny", "critical_batch_tiny"])
    # Every rung's run is the ladder's own run (same identity, so reused), and the method runs
    # at every batch of the scan on every grid value.
    ours, theirs = make_plan(spec).runs, make_plan(ladder).runs
    assert {r.id for r in theirs} <= {r.id for r in ours}
    assert len(ours) - len(theirs) == 3 * len(spec.scan_values)
    quick, _ = ladder_sweep("optax:lion", quick=True)
    assert quick.methods["lion"].grid == {LR: [DEFAULT_GRID[LR][1]]}
    assert quick.name == "ladder_lion_quick"


def test_a_config_file_brings_the_methods_section_and_keeps_the_rungs(tmp_path):
    spec, notes = ladder_sweep(LION, config_file=LION_CONFIG, quick=True)
    assert spec.base == LION_CONFIG and spec.base_config.optimizer.lion.b2 == 0.99
    assert [n.split("=")[0] for n in notes] == ["optimizer.learning_rate"]  # Set back, named.
    ladder = make_plan(load_sweep_file(LADDER, quick=True)).runs
    assert {r.id for r in ladder} <= {r.id for r in make_plan(spec).runs}
    bad = tmp_path / "bad_config.py"
    bad.write_text(
        "from experiments import tiny\n"
        "def get_config():\n"
        "    c = tiny.get_config()\n"
        "    c.train.my_knob = 3\n"
        "    return c\n"
    )
    with pytest.raises(SweepError, match="adds train.my_knob, which the ladder's base tiny.py"):
        ladder_sweep("optax:lion", config_file=bad)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--method", "optax:nope"], "optimizer 'optax:nope': module optax has no attribute"),
        (["--method", "optax:lion", "--grid", "lr"], "--grid 'lr' is not KEY=V1,V2"),
        (["--method", "optax:adamw"], "--name 'adamw' is a rung of the ladder already"),
        (["--method", "optax:lion", "--config", "nope.py"], "nope.py does not exist"),
        (["--method", "optax:lion", "--grid", "optimizer.lr=1"], "unknown config key 'optimiz"),
    ],
)
def test_a_bad_ladder_option_is_one_line(argv, expected, tmp_path, capsys):
    assert cli_main(["ladder", *argv, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gnbench ladder: ") and expected in lines[0]
    assert not (tmp_path / "out").exists()


# Fake learning curves for the rungs: loss = 2 + 3 exp(-rate * step) + 0.01 seed (the fake
# trainer's, whose rate is optimizer.learning_rate): AdamW slowest, full GN fastest.
TARGET = 3.1
RATES = {"adamw": 0.1, "gauss_newton": 0.4}
OTHERS = 0.2


def _loss(rate, step, seed):
    return 2.0 + 3.0 * math.exp(-rate * step) + 0.01 * seed


def _crossing(rate, seed):
    """The report's rule: the crossing interpolated linearly between evaluations."""
    step = 0
    while _loss(rate, step + 1, seed) > TARGET:
        step += 1
    above, below = _loss(rate, step, seed), _loss(rate, step + 1, seed)
    return step + (above - TARGET) / (above - below)


def _write_run(run_dir: Path, run, rate: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "identity.json").write_text(json.dumps({"hash": run.config_hash}))
    steps = run.overrides["train.steps"]
    tokens = 8 * 64 * run.overrides["data.micro_batches"]
    records = []
    for step in range(steps + 1):
        units = dict(step=step, tokens=tokens * step, wall_clock=0.5 * step)
        units.update(grad_equivalents=8.0 * step, flops=1e9 * step / rate)
        loss = _loss(rate, step, run.seed)
        if step:
            records.append(dict(kind="train", loss=loss, **units))
        records.append(dict(kind="eval", val_loss=loss, **units))
        if loss <= TARGET:
            break
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "summary.json").write_text(json.dumps(dict(status="finished")))


def _finished_ladder(out: Path) -> int:
    """``<out>/ladder_tiny_quick`` holding every run of the quick ladder, both stages, with
    fake results; returns how many."""
    spec = load_sweep_file(LADDER, quick=True)
    stage1 = make_plan(spec)
    folder = out / spec.name
    for run in stage1.runs:
        _write_run(folder / run.workdir, run, RATES.get(run.method, OTHERS))
    plan, _ = full_plan(spec, stage1, folder)
    for run in plan.runs[len(stage1.runs) :]:
        _write_run(folder / run.workdir, run, RATES.get(run.method, OTHERS))
    return len(plan.runs)


@pytest.mark.slow
def test_the_ladder_reuses_the_rungs_runs_and_prints_the_methods_row(tmp_path, capsys):
    out = tmp_path / "runs"
    assert _finished_ladder(out) == 21  # 7 rungs x 2 batches, then a headline seed each.
    argv = ["--method", "optax:lion", "--grid", f"{LR}=0.2", "--quick", "--out", str(out)]
    assert main([*argv, "--parallel", "2"], trainer_cmd=FAKE) == 0
    sweep = out / "ladder_lion_quick"
    launched = sorted(p.parent.name for p in sweep.glob("runs/*/invocations.txt"))
    assert len(launched) == 3 and all(name.startswith("lion-") for name in launched)
    assert len(list(sweep.glob("runs/*/summary.json"))) == 24  # The rungs were copied in.
    printed = capsys.readouterr().out
    row = (sweep / ROW_FILE).read_text()
    assert row.strip() in printed
    cells = [c.strip() for c in row.strip().splitlines()[-1].strip("|").split("|")]
    assert cells[0] == "lion" and cells[2] == "learning_rate=0.2" and cells[3] == "2/2"
    # Headline at K=2 (the same iterations at K=4, fewer tokens); medians over seeds 0 and 1.
    med = lambda rate: (_crossing(rate, 0) + _crossing(rate, 1)) / 2  # noqa: E731
    m, b, g = med(0.2), med(RATES["adamw"]), med(RATES["gauss_newton"])
    assert cells[1] == "1k" and cells[4].startswith(f"{m:.1f} [")
    assert cells[8].startswith(f"{(b - m) / (b - g):.2f} [")
    assert cells[10] == "none"  # One grid value: no edge.
    assert (sweep / "report.md").exists()
