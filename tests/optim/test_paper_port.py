"""gnbench's GN, built from a config as the trainer builds it, against a port of the paper's loop.

:mod:`tests.optim.paper_port` re-implements the authors' ``llama_train_gn.py`` outer loop in
plain JAX + optax. Each case maps the paper's flags to gnbench config keys (:func:`gn_overrides`,
the mapping docs/paper_departures.md tabulates), builds the optimizer with
``registry.build(get_config().optimizer, BuildContext(...))`` and runs both on the same tiny LM
(embedding, one tanh layer with a bias, head; float64) for 4 outer steps of 4 inner steps: θ after
every outer step and the chosen step size α agree to 1e-10. The flipped cases show the comparison
can fail: one semantic changed makes θ differ by far more than 1e-6.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import paper_45m, paper_150m
from experiments.base import get_config
from gnbench.optim import BuildContext, build
from gnbench.optim.gn.builders import _gn_inner_schedule
from tests.optim.paper_port import paper_gn, paper_schedule, paper_solver

T, K = 4, 4  # outer steps, inner steps (= micro-batches) per outer step
VOCAB, WIDTH, SEQS, LEN = 7, 4, 3, 6

# The paper's defaults (llama_train_gn.py FLAGS) for the flags a case leaves out.
PAPER_DEFAULTS = dict(
    optimizer_type="adamw",
    lr_sched="constant",
    inner_loop_lr=0.01,
    global_warmup=0.0,
    inner_loop_warmup=0.0,
    end_lr=0.0,
    inner_b1=0.9,
    inner_b2=0.999,
    inner_clip_gradient=0.0,
    optimizer_wd=0.0,
    linesearch=False,
    ls_range=5,
    reset_start=False,
)
CASES = {
    "adamw-global_cosine-clip-wd-ls-warm": dict(
        lr_sched="global_cosine",
        inner_loop_lr=0.5,
        global_warmup=0.25,
        inner_clip_gradient=0.05,
        optimizer_wd=0.1,
        linesearch=True,
    ),
    "adamw-constant_inner_cosine-end-warm": dict(
        lr_sched="constant_with_inner_cosine",
        inner_loop_lr=0.03,
        global_warmup=0.5,
        inner_loop_warmup=0.25,
        end_lr=0.003,
    ),
    "adamw-cosine_global-clip-wd-ls-cold": dict(
        lr_sched="cosine_with_global_schedule",
        inner_loop_lr=0.5,
        global_warmup=0.5,
        inner_loop_warmup=0.25,
        inner_clip_gradient=0.05,
        optimizer_wd=0.1,
        linesearch=True,
        reset_start=True,
    ),
    "adamw-constant-clip-ls-cold": dict(
        inner_loop_lr=0.2, inner_clip_gradient=0.05, linesearch=True, ls_range=4, reset_start=True
    ),
    "muon-global_cosine-clip-wd-ls-warm": dict(
        optimizer_type="muon",
        lr_sched="global_cosine",
        inner_loop_lr=0.5,
        global_warmup=0.25,
        inner_clip_gradient=0.02,
        optimizer_wd=0.1,
        linesearch=True,
    ),
    "muon-constant_inner_cosine-wd-cold": dict(
        optimizer_type="muon",
        lr_sched="constant_with_inner_cosine",
        inner_loop_lr=0.03,
        inner_clip_gradient=1.0,
        optimizer_wd=0.01,
        reset_start=True,
    ),
    "muon-cosine_global-ls-warm": dict(
        optimizer_type="muon",
        lr_sched="cosine_with_global_schedule",
        inner_loop_lr=0.5,
        global_warmup=0.5,
        inner_loop_warmup=0.25,
        inner_clip_gradient=1.0,
        linesearch=True,
    ),
}


@pytest.fixture(autouse=True)
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def gn_overrides(flags, total_steps, k):
    """The gnbench ``optimizer.gn`` values of the paper's flags (warm-ups <= 1 are fractions)."""

    def steps(w, span):
        return int(w * span) if w <= 1 else int(w)

    sched, lr = flags["lr_sched"], flags["inner_loop_lr"]
    return dict(
        inner="muon_optax" if flags["optimizer_type"] == "muon" else "adamw",
        inner_learning_rate=lr,
        inner_adam_learning_rate=lr,  # One schedule for every leaf there.
        inner_schedule=sched,
        inner_warmup_steps=steps(flags["global_warmup"], total_steps * k)
        if sched == "global_cosine"
        else 0,
        outer_warmup_steps=0
        if sched == "global_cosine"
        else steps(flags["global_warmup"], total_steps),
        cycle_warmup_steps=steps(flags["inner_loop_warmup"], k),
        warmup_start=0.1,  # init_value=lr*0.1 in every warm-up there.
        schedule_end=flags["end_lr"] / lr,
        boundary_off_by_one=True,
        schedule_outer_steps=total_steps,
        restart_schedule=flags["reset_start"],
        warm_start=not flags["reset_start"],
        inner_b1=flags["inner_b1"],
        inner_b2=flags["inner_b2"],
        inner_weight_decay=flags["optimizer_wd"],
        inner_grad_clip=float(flags["inner_clip_gradient"]),
        damping=0.0,  # --inner_loop_wd never reaches the GN gradient there.
        line_search=flags["ls_range"] if flags["linesearch"] else 0,
        line_search_data="fresh",
    )


def apply_fn(params, tokens):
    h = params["embed"]["embedding"][tokens[:, :-1]]
    h = jnp.tanh(h @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["head"]["kernel"]


def loss_fn(logits, tokens):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))


def tiny_lm():
    """θ_0 and, per outer step, K inner and K line-search micro-batches of token sequences."""
    keys = jax.random.split(jax.random.key(0), 5)
    params = {
        "embed": {"embedding": jax.random.normal(keys[0], (VOCAB, WIDTH))},
        "hidden": {
            "kernel": jax.random.normal(keys[1], (WIDTH, WIDTH)) / 2,
            "bias": 0.1 * jax.random.normal(keys[2], (WIDTH,)),
        },
        "head": {"kernel": jax.random.normal(keys[3], (WIDTH, VOCAB)) / 2},
    }
    start = jax.random.randint(keys[4], (T, 2, K, SEQS, 1), 0, VOCAB)
    tokens = (start + jnp.arange(LEN + 1) * 2) % VOCAB  # Learnable: each token is the last + 2.
    return params, tokens


@functools.cache
def run_paper(name):
    flags = {**PAPER_DEFAULTS, **CASES[name]}
    params, tokens = tiny_lm()
    sched = paper_schedule(
        flags["lr_sched"],
        flags["inner_loop_lr"],
        T,
        K,
        flags["global_warmup"],
        flags["inner_loop_warmup"],
        flags["end_lr"],
    )
    # mu_dtype: theirs is float32, their parameters' dtype; gnbench's AdamW inner keeps the
    # parameters' dtype (float64 here), its Muon inner float32 as theirs.
    mu_dtype = jnp.float32 if flags["optimizer_type"] == "muon" else None
    solver = paper_solver(
        sched,
        flags["inner_b1"],
        flags["inner_b2"],
        flags["inner_clip_gradient"],
        flags["optimizer_wd"],
        flags["optimizer_type"],
        mu_dtype=mu_dtype,
    )
    data = [(list(tokens[t, 0]), list(tokens[t, 1])) for t in range(T)]
    run = paper_gn(
        apply_fn,
        loss_fn,
        params,
        data,
        solver=solver,
        linesearch=flags["linesearch"],
        ls_range=flags["ls_range"],
        reset_start=flags["reset_start"],
    )
    return params, run


def run_gnbench(name, **flip):
    flags = {**PAPER_DEFAULTS, **CASES[name]}
    cfg = get_config().optimizer
    cfg.name = "gauss_newton"
    for key, value in {**gn_overrides(flags, T, K), **flip}.items():
        cfg.gn[key] = value
    opt = build(cfg, BuildContext(T, K, apply_fn=apply_fn, loss_fn=loss_fn))
    params, tokens = tiny_lm()
    step = jax.jit(
        lambda p, s, b, ls: opt.tx.update(
            None, s, p, batch=b, ls_batch=ls if ls is not None else None
        )
    )
    state = opt.tx.init(params)
    thetas, alphas, alpha_metrics = [], [], []
    for t in range(T):
        ls = tokens[t, 1] if opt.ls_micro_batches else None
        updates, state = step(params, state, tokens[t, 0], ls)
        direction = jax.tree.map(jnp.subtract, state.inner_params, params)
        d_d = sum(jnp.vdot(d, d) for d in jax.tree.leaves(direction))
        u_d = sum(
            jnp.vdot(u, d)
            for u, d in zip(jax.tree.leaves(updates), jax.tree.leaves(direction), strict=True)
        )
        alphas.append(float(u_d / d_d) if d_d > 0 else np.nan)
        alpha_metrics.append(float(state.metrics["alpha"]))
        params = jax.tree.map(jnp.add, params, updates)
        thetas.append(params)
    return thetas, alphas, alpha_metrics


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def relative_gaps(thetas, want, theta0):
    """‖θ − θ_paper‖ / ‖θ_paper − θ_0‖ after each outer step."""
    return [
        np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b) - flat(theta0))
        for a, b in zip(thetas, want, strict=True)
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_gnbench_matches_the_paper_loop(name):
    theta0, paper = run_paper(name)
    thetas, alphas, alpha_metrics = run_gnbench(name)
    flags = {**PAPER_DEFAULTS, **CASES[name]}
    moved = np.linalg.norm(flat(paper.thetas[-1]) - flat(theta0)) / np.linalg.norm(flat(theta0))
    assert moved > 1e-2, moved  # Not a vacuous comparison: θ moves.
    assert max(relative_gaps(thetas, paper.thetas, theta0)) <= 1e-10
    np.testing.assert_allclose(alpha_metrics, paper.step_sizes, rtol=1e-7)  # float32 metric
    for got, want in zip(alphas, paper.step_sizes, strict=True):
        assert np.isnan(got) or abs(got - want) <= 1e-10, (alphas, paper.step_sizes)
    clip = flags["inner_clip_gradient"]
    if clip and clip < 0.5:  # The clip binds, in each partition for Muon.
        groups = ("adamw", "muon") if flags["optimizer_type"] == "muon" else ("all",)
        for group in groups:
            assert max(n[group] for step in paper.grad_norms for n in step) > 2 * clip, group


def test_line_search_choices_are_not_all_full_steps():
    steps = [
        s for name in CASES if CASES[name].get("linesearch") for s in run_paper(name)[1].step_sizes
    ]
    assert min(steps) < 1.0 and max(steps) == 1.0, steps


FLIPS = [
    ("adamw-global_cosine-clip-wd-ls-warm", dict(warmup_start=0.0)),  # warm-up from 0
    ("adamw-global_cosine-clip-wd-ls-warm", dict(inner_grad_clip=0.0)),  # no inner clip
    ("adamw-cosine_global-clip-wd-ls-cold", dict(restart_schedule=False)),  # one global index
    ("muon-cosine_global-ls-warm", dict(boundary_off_by_one=False)),  # boundaries fixed
    ("muon-constant_inner_cosine-wd-cold", dict(schedule_end=0.1)),  # cosines end at 10%
]


@pytest.mark.parametrize(("name", "flip"), FLIPS, ids=[next(iter(f)) for _, f in FLIPS])
def test_one_flipped_semantic_breaks_the_match(name, flip):
    theta0, paper = run_paper(name)
    thetas, _, _ = run_gnbench(name, **flip)
    assert max(relative_gaps(thetas, paper.thetas, theta0)) > 1e-6


@pytest.mark.parametrize(
    "method",
    ["global_cosine", "cosine_with_global_schedule", "constant_with_inner_cosine", "constant"],
)
@pytest.mark.parametrize("restart", [False, True])
def test_schedules_match_the_paper_at_every_inner_step(method, restart):
    t, k, lr = 5, 6, 0.02
    flags = {**PAPER_DEFAULTS, "lr_sched": method, "inner_loop_lr": lr, "end_lr": 0.002}
    flags.update(global_warmup=0.4, inner_loop_warmup=2, reset_start=restart)
    g = get_config().optimizer.gn
    for key, value in gn_overrides(flags, t, k).items():
        g[key] = value
    ours = _gn_inner_schedule(g, BuildContext(t, k))
    theirs = paper_schedule(method, lr, t, k, 0.4, 2, 0.002)
    steps = np.arange(t * k, dtype=np.int32)
    want = [float(theirs(s % k if restart else s)) for s in steps]  # Their count restarts.
    got = [float(ours(s)) if callable(ours) else ours for s in steps]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_fixed_boundaries_give_outer_step_s_its_own_envelope():
    t, k, lr = 4, 3, 0.02
    g = get_config().optimizer.gn
    g.update(inner_schedule="cosine_with_global_schedule", inner_learning_rate=lr)
    g.update(warmup_start=0.1, schedule_end=0.0, outer_warmup_steps=1, boundary_off_by_one=False)
    ours = _gn_inner_schedule(g, BuildContext(t, k))
    envelope = [lr * 0.1, *(lr * 0.5 * (1 + np.cos(np.pi * s / (t - 1))) for s in range(t - 1))]
    want = [p * 0.5 * (1 + np.cos(np.pi * i / k)) for p in envelope for i in range(k)]
    np.testing.assert_allclose([float(ours(s)) for s in range(t * k)], want, rtol=1e-12)


# The authors' runs, flag by flag: natalieabreu/full-gauss-newton templates/gn-template.sbatch
# (45M) and, for 150M (no template there), the GN command of the gmbabreu/full-gauss-newton
# README ("150M Full Gauss-Newton Run").
TEMPLATE_45M = dict(
    total_steps=227,
    inner_loop_iter=122,
    train_dataset_batch_size=32,
    optimizer_type="muon",
    lr_sched="constant_with_inner_cosine",
    inner_loop_lr=0.01,
    optimizer_wd=0.001,
    inner_clip_gradient=1,
    linesearch=True,
    ls_range=5,
)
README_150M = dict(
    total_steps=500000,
    inner_loop_iter=1831,
    train_dataset_batch_size=128,
    optimizer_type="muon",
    lr_sched="global_cosine",
    inner_loop_lr=0.003,
    optimizer_wd=0.001,
    inner_clip_gradient=1,
    linesearch=True,
    ls_range=10,
)


@pytest.mark.parametrize(
    ("module", "template"), [(paper_45m, TEMPLATE_45M), (paper_150m, README_150M)]
)
def test_paper_presets_set_the_authors_flags(module, template):
    flags = {**PAPER_DEFAULTS, **template}
    cfg = module.get_config()
    want = gn_overrides(flags, flags["total_steps"], flags["inner_loop_iter"])
    assert {key: cfg.optimizer.gn[key] for key in want} == want
    assert cfg.optimizer.name == "gauss_newton"
    assert cfg.data.micro_batches == flags["inner_loop_iter"]
    assert cfg.data.micro_batch == flags["train_dataset_batch_size"]
    assert (cfg.data.seq_len, cfg.model.dtype) == (1024, "float32")
