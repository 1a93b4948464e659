"""Run ids are hashes of the fully resolved config: a changed base experiment makes new runs, the
report counts only the current plan's runs, the trainer computes the same hash as the planner,
and wandb ids differ across sweeps and bases."""

import json
import shutil

from gnbench.cli import parse_train_config
from gnbench.sweep import load_sweep_file, make_plan, run_args
from gnbench.sweep.cli import main
from gnbench.sweep.spec import REPO_ROOT
from gnbench.train.identity import init_from_identity, make_identity, wandb_init_args
from tests.sweep.test_sweep import FAKE, HERE, invocations, write_sweep

ONE_METHOD = {"adamw": {"grid": {"optimizer.learning_rate": [0.3]}}}


def test_changed_base_makes_new_runs_and_the_report_uses_only_the_current_plan(tmp_path):
    same = tmp_path / "same_base.py"
    shutil.copy(HERE / "fake_base.py", same)
    changed = tmp_path / "changed_base.py"
    changed.write_text((HERE / "fake_base.py").read_text().replace("seq_len=25", "seq_len=32"))
    assert "seq_len=32" in changed.read_text()

    def ids(base):
        path = write_sweep(tmp_path, base=str(base), methods=ONE_METHOD)
        return [r.id for r in make_plan(load_sweep_file(path)).runs]

    original = ids(HERE / "fake_base.py")
    assert ids(same) == original  # The content decides, not the path.
    assert not set(ids(changed)) & set(original)

    out = tmp_path / "out"
    for base in (same, changed):
        path = write_sweep(tmp_path, base=str(base), methods=ONE_METHOD)
        assert main([str(path), "--out", str(out)], trainer_cmd=FAKE) == 0
    sweep_dir = out / "fake"
    calls = invocations(sweep_dir)
    assert len(calls) == 4 and all(v == ["start", "finish"] for v in calls.values())
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert sorted(e["id"] for e in plan["runs"]) == sorted(ids(changed))
    assert "- Runs: 2/2 done (0 diverged, 0 collapsed" in (sweep_dir / "report.md").read_text()


def test_trainer_hashes_like_the_planner_and_wandb_ids_differ_across_sweeps_and_bases(tmp_path):
    other_base = tmp_path / "tiny_seq32.py"
    other_base.write_text(
        "from experiments import tiny\n\n\ndef get_config():\n"
        "    c = tiny.get_config()\n    c.data.seq_len = 32\n    return c\n"
    )
    seen = {}
    for sweep, base in (("s1", "tiny"), ("s2", "tiny"), ("s1", "seq32")):
        folder = tmp_path / f"{sweep}-{base}"
        folder.mkdir()
        path = write_sweep(
            folder,
            name=sweep,
            base=str(REPO_ROOT / "experiments" / "tiny.py") if base == "tiny" else str(other_base),
            overrides={"train.steps": 3},
            methods={"adamw": {"grid": {"optimizer.learning_rate": [3e-3, 1e-2]}}},
            seeds=[0],
            warmup={"steps": 2},
        )
        plan = make_plan(load_sweep_file(path))
        sweep_dir = folder / "out" / sweep
        warm_dir = sweep_dir / "runs" / plan.warmup.id
        warm_dir.mkdir(parents=True)  # What the warm-up's trainer writes:
        (warm_dir / "identity.json").write_text(json.dumps({"hash": plan.warmup.config_hash}))
        for run in plan.all_runs():
            cfg = parse_train_config(run_args(plan, run, sweep_dir))
            identity = make_identity(cfg, init_from_identity(cfg.train.init_from))
            assert identity["hash"] == run.config_hash and run.id.endswith(identity["hash"][:10])
            wandb = wandb_init_args(cfg, {**identity, "created": 1.0}, cfg.train.workdir)
            assert wandb["name"] == f"{sweep}/{run.id}" and wandb["group"] == sweep
            seen[(sweep, base, run.method, cfg.optimizer.learning_rate)] = (run.id, wandb["run_id"])
    for lr in (3e-3, 1e-2):
        s1, s2, seq32 = (
            seen[(s, b, "adamw", lr)] for s, b in (("s1", "tiny"), ("s2", "tiny"), ("s1", "seq32"))
        )
        assert s1[0] == s2[0]  # The same resolved config: the same run id...
        assert s1[1] != s2[1]  # ...but each sweep its own wandb run.
        assert seq32[0] != s1[0] and seq32[1] != s1[1]  # Another base: another run.
    wandb_ids = [w for _, w in seen.values()]
    assert len(set(wandb_ids)) == len(wandb_ids)


def test_identity_keeps_only_the_optimizer_sections_the_method_reads():
    """A setting of a section the method does not read (tests/optim/test_registry_contract.py
    proves the builders never touch one) leaves the run's id alone; one it reads renames it."""
    from experiments.base import get_config
    from gnbench.train.identity import config_hash

    def hash_of(name, inner="adamw", **sets):
        cfg = get_config()
        cfg.optimizer.name, cfg.optimizer.gn.inner = name, inner
        for key, value in sets.items():
            section, field = key.split("__")
            cfg.optimizer[section][field] = value
        return config_hash(cfg)

    assert hash_of("adamw") == hash_of(
        "adamw", kfac__damping=0.5, soap__shampoo_beta=0.5, gn__damping=1.0
    )
    assert hash_of("soap") != hash_of("soap", soap__shampoo_beta=0.5)
    assert hash_of("soap") == hash_of("soap", muon__momentum=0.5)
    assert hash_of("gauss_newton") != hash_of("gauss_newton", gn__damping=1.0)
    assert hash_of("gauss_newton") == hash_of("gauss_newton", muon__momentum=0.5)
    muon_inner = hash_of("gauss_newton", "muon")
    assert muon_inner != hash_of("gauss_newton", "muon", muon__momentum=0.5)
    assert hash_of("gauss_newton", "kfac") != hash_of("gauss_newton", "kfac", kfac__damping=0.5)
