"""Every experiment builds: model, optimizer state and one optimizer step under jax.eval_shape.

Covers the config files (tiny, and the paper's 45M and 150M setups, which no CPU can run, with
every registered optimizer since users switch methods by flag) and every run the sweep files
plan. Nothing is computed: shapes are traced, so the 150M model at a 240M-token batch is cheap.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnbench import optim
from gnbench.model import get_model_config, init_params
from gnbench.sweep import load_sweep_file, make_plan
from gnbench.sweep.spec import REPO_ROOT, check_overrides, load_config_file
from gnbench.train.state import lm_fns

EXPERIMENTS = REPO_ROOT / "experiments"
VOCAB = {"byte": 256, "gpt2": 50257}  # bpe: data.vocab_size


def abstract_step(cfg):
    """Traces init and one update of ``cfg``'s optimizer; returns (params, new params) shapes."""
    model_cfg = get_model_config(
        cfg.model.name,
        vocab_size=VOCAB.get(cfg.data.tokenizer, cfg.data.vocab_size),
        dtype=cfg.model.dtype,
    )
    k, b, t = cfg.data.micro_batches, cfg.data.micro_batch, cfg.data.seq_len
    apply_fn, loss_fn = lm_fns(model_cfg)
    opt = optim.build(
        cfg.optimizer,
        optim.BuildContext(
            cfg.train.steps,
            k,
            apply_fn=apply_fn,
            loss_fn=loss_fn,
            example_micro_batch=jax.ShapeDtypeStruct((b, t + 1), jnp.int32),
        ),
    )
    batch = jax.ShapeDtypeStruct((k, b, t + 1), jnp.int32)
    ls_batch = batch if opt.ls_micro_batches else None

    def init_and_step(key, seqs, ls_seqs):
        params = init_params(model_cfg, key)
        state = opt.tx.init(params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = opt.tx.update(grads, state, params, batch=seqs, ls_batch=ls_seqs)
        return params, jax.tree.map(jnp.add, params, updates), state

    return jax.eval_shape(init_and_step, jax.random.key(0), batch, ls_batch)


def assert_same_shapes(params, new_params):
    shape = lambda x: (x.shape, x.dtype)  # noqa: E731
    assert jax.tree.map(shape, params) == jax.tree.map(shape, new_params)


@pytest.mark.parametrize("name", ["tiny", "paper_45m", "paper_150m"])
def test_config_file_builds_with_its_own_optimizer(name):
    cfg = load_config_file(EXPERIMENTS / f"{name}.py")
    params, new_params, _ = abstract_step(cfg)
    assert_same_shapes(params, new_params)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    expected = {"tiny": (0.5e6, 1.5e6), "paper_45m": (40e6, 50e6), "paper_150m": (120e6, 160e6)}
    assert expected[name][0] < n < expected[name][1], n


@pytest.mark.parametrize("method", optim.known_optimizers())
@pytest.mark.parametrize("name", ["paper_45m", "paper_150m"])
def test_paper_configs_build_with_every_optimizer(name, method):
    cfg = check_overrides(
        load_config_file(EXPERIMENTS / f"{name}.py"), {"optimizer.name": method}, "test"
    )
    params, new_params, _ = abstract_step(cfg)
    assert_same_shapes(params, new_params)


@pytest.mark.parametrize("name", ["compare_tiny", "critical_batch_tiny"])
@pytest.mark.parametrize("quick", [False, True])
def test_every_planned_sweep_run_builds(name, quick):
    spec = load_sweep_file(EXPERIMENTS / f"{name}.py", quick=quick)
    base = load_config_file(spec.base)
    plan = make_plan(spec)
    built = set()
    for run in plan.all_runs():
        cfg = check_overrides(base, run.overrides, run.id)
        key = (cfg.optimizer.name, cfg.data.micro_batches, cfg.optimizer.gn.inner)
        if key in built:  # Same shapes and program as one already traced.
            continue
        built.add(key)
        params, new_params, _ = abstract_step(cfg)
        assert_same_shapes(params, new_params)
    assert {m for m, _, _ in built} == set(spec.methods)


@pytest.mark.parametrize("quick", [False, True])
def test_ladder_reuses_the_bench_runs_it_shares_and_every_new_rung_builds(quick):
    ladder = load_sweep_file(EXPERIMENTS / "ladder_tiny.py", quick=quick)
    bench = load_sweep_file(EXPERIMENTS / "critical_batch_tiny.py", quick=quick)
    assert ladder.reuse == [bench.name] and bench.reuse == [ladder.name]  # either order
    ladder_ids = {r.id: r.method for r in make_plan(ladder).runs}
    bench_ids = {r.id for r in make_plan(bench).runs}
    shared = {rid for rid, m in ladder_ids.items() if m in ("adamw", "soap", "gauss_newton")}
    shared |= {rid for rid, m in ladder_ids.items() if m == "layerwise_gn"}
    # The same identity: make bench's runs of these methods are the ladder's, run for run.
    assert shared and shared <= bench_ids
    new = {rid for rid in ladder_ids if rid not in shared}
    assert new and not new & bench_ids  # the new rungs' runs are the ladder's own
    assert {ladder_ids[rid] for rid in new} == {"diag_gn", "kfac", "gn_kfac"}
    base = load_config_file(ladder.base)
    built = set()
    for run in make_plan(ladder).runs:
        if run.method not in ("diag_gn", "kfac", "gn_kfac"):
            continue
        cfg = check_overrides(base, run.overrides, run.id)
        key = (run.method, cfg.data.micro_batches)
        if key in built:
            continue
        built.add(key)
        params, new_params, _ = abstract_step(cfg)
        assert_same_shapes(params, new_params)
    assert {m for m, _ in built} == {"diag_gn", "kfac", "gn_kfac"}
