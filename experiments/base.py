"""Every config field gnbench reads, with its meaning. Experiments start from ``get_config()``.

Override any field from the command line: ``gnbench train --config experiments/tiny.py
--config.optimizer.learning_rate=3e-3``. Unknown keys fail (ml_collections locks the dict);
``gnbench train --help`` lists every key with its default and the comment next to it here.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # PRNG seed (>= 0): parameter init and data order.

    c.model = ml_collections.ConfigDict()
    c.model.name = "tiny"  # One of gnbench.model.CONFIGS: tiny, small, 45m, 150m.
    c.model.dtype = "float32"  # Compute dtype: float32 (paper) or bfloat16; params stay float32.

    c.data = ml_collections.ConfigDict()
    c.data.source = "shakespeare"  # shakespeare | sotu | a text file/folder path | hf:<dataset>.
    c.data.tokenizer = "byte"  # byte | bpe (trained locally) | gpt2 (BPE from a vocab file).
    c.data.vocab_size = 256  # Vocabulary for tokenizer=bpe (byte: 256; gpt2: 50257).
    c.data.dir = "data"  # Folder holding prepared token files (one sub-folder per corpus).
    c.data.seq_len = 64  # T: tokens per training sequence (T+1 per sample); <= the model max_len.
    c.data.micro_batch = 16  # b: sequences per micro-batch (global, across all devices).
    c.data.micro_batches = 8  # K: micro-batches per optimizer iteration (GN inner steps).
    c.data.val_sequences = 64  # Fixed held-out sequences evaluated at every evaluation.

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # Registry name: gnbench.optim.known_optimizers().
    c.optimizer.learning_rate = 3e-3  # Peak learning rate.
    c.optimizer.schedule = "warmup_cosine"  # warmup_cosine | warmup_constant | constant.
    c.optimizer.warmup_steps = 4  # Linear warmup iterations.
    c.optimizer.warmup_start = 0.0  # Warm-up start, fraction of peak (paper: init_lr/lr = 0).
    c.optimizer.schedule_end = 0.1  # warmup_cosine end, fraction of peak (paper: end_lr/lr).
    c.optimizer.b1 = 0.9  # Adam first-moment decay.
    c.optimizer.b2 = 0.95  # Adam second-moment decay.
    c.optimizer.eps = 1e-8  # Adam epsilon.
    c.optimizer.weight_decay = 0.1  # Decoupled weight decay.
    c.optimizer.grad_clip = 1.0  # Global-norm clip; 0 or None means no clipping.
    # Optimizer-specific sections (soap, muon, gn) are declared by optimizer issues below.
    c.optimizer.soap = ml_collections.ConfigDict()  # SOAP (uses the common b1, b2, eps, decay).
    c.optimizer.soap.precondition_frequency = 10  # Refresh the eigenbases every this many steps.
    c.optimizer.soap.max_precond_dim = 10000  # Axes longer than this are not rotated.
    c.optimizer.soap.merge_dims = False  # Merge adjacent axes while product <= max_precond_dim.
    c.optimizer.soap.precondition_1d = False  # Also rotate 1-D parameters (norm scales).
    c.optimizer.soap.shampoo_beta = -1.0  # Kronecker-factor EMA decay; negative means "= b2".
    c.optimizer.soap.normalize_grads = False  # Divide each step by its RMS (reference option).
    c.optimizer.soap.correct_bias = True  # Adam bias correction.
    c.optimizer.muon = ml_collections.ConfigDict()  # Muon (learning_rate is the Muon part's).
    c.optimizer.muon.adam_learning_rate = 3e-3  # Peak lr of the AdamW part (embed, head, 1-D).
    c.optimizer.muon.momentum = 0.95  # Muon momentum decay.
    c.optimizer.muon.nesterov = True  # Nesterov look-ahead in the Muon momentum.
    c.optimizer.muon.ns_steps = 5  # Newton-Schulz iterations.
    c.optimizer.muon.adam_weight_decay = 0.0  # AdamW-part decay (weight_decay is Muon's).
    c.optimizer.gn = ml_collections.ConfigDict()  # gauss_newton, gn_prox_linear, layerwise_*.
    c.optimizer.gn.inner = "adamw"  # GN inner: adamw | muon (reference) | muon_optax | kfac.
    c.optimizer.gn.inner_learning_rate = 3e-3  # Peak inner lr (Muon part when inner=muon).
    c.optimizer.gn.inner_adam_learning_rate = 3e-3  # Peak lr of the AdamW part when inner=muon.
    # global_cosine | cosine_with_global_schedule | constant_with_inner_cosine | constant (the
    # paper's --lr_sched values) | cosine_per_outer (gnbench's earlier per-outer cosine).
    c.optimizer.gn.inner_schedule = "global_cosine"
    c.optimizer.gn.inner_warmup_steps = 32  # Inner-step warm-up (global_cosine, cosine_per_outer).
    c.optimizer.gn.warmup_start = 0.0  # Warm-ups start at this fraction of peak (paper: 0.1).
    c.optimizer.gn.schedule_end = 0.1  # Cosines end at this fraction of peak (paper: end_lr=0).
    c.optimizer.gn.outer_warmup_steps = 0  # Envelope warm-up, outer steps (paper: global_warmup).
    c.optimizer.gn.cycle_warmup_steps = 0  # Per-outer cosine warm-up (paper: inner_loop_warmup).
    c.optimizer.gn.boundary_off_by_one = False  # cosine_with_global_schedule as the paper's code.
    c.optimizer.gn.schedule_outer_steps = 0  # Outer steps T the schedules span; 0 = train.steps.
    c.optimizer.gn.restart_schedule = False  # Index by inner step within outer (reset_start).
    # Clip of the inner gradient before the inner optimizer, 0 = off: global norm (adamw, muon),
    # each partition's own norm (muon_optax, as the paper; paper: --inner_clip_gradient).
    c.optimizer.gn.inner_grad_clip = 0.0
    c.optimizer.gn.inner_b1 = 0.9  # Inner Adam first-moment decay.
    c.optimizer.gn.inner_b2 = 0.95  # Inner Adam second-moment decay.
    c.optimizer.gn.inner_weight_decay = 0.0  # Inner decoupled weight decay (0: pure GN model).
    c.optimizer.gn.damping = 0.0  # Proximal term lambda/2 |theta - theta_t|^2 (pulls to theta_t).
    c.optimizer.gn.line_search = 5  # Number of step sizes 2^(-i/2), i < n, tried; 0 = no search.
    c.optimizer.gn.warm_start = True  # Start each inner solve at the previous one (state kept).
    # gn.inner=kfac: estimate K-FAC's factors of G at theta_t once per outer step, on its first
    # micro-batch ("outer", as the kfac rung does per step), or on every inner one ("inner").
    c.optimizer.gn.inner_kfac_refresh = "outer"
    # Data of the line search: fresh (K new micro-batches per iteration, as the paper's code
    # does: 2x the inner solve's tokens) | inner (re-evaluate the inner solve's K micro-batches).
    c.optimizer.gn.line_search_data = "fresh"
    # The approximation ladder's rungs (docs/METHOD.md): the same GN curvature, less structure.
    c.optimizer.diag_gn = ml_collections.ConfigDict()  # diag_gn: m / (diag(G) + damping)^power.
    c.optimizer.diag_gn.power = 0.5  # 1: diagonal Newton step; 0.5: Adam-like.
    c.optimizer.diag_gn.damping = 1e-8  # Added to the GN diagonal before the power.
    c.optimizer.diag_gn.b2 = 0.99  # Decay of the GN-diagonal average (bias-corrected).
    c.optimizer.diag_gn.curvature_micro_batches = 1  # Micro-batches estimating diag(G) per step.
    c.optimizer.kfac = ml_collections.ConfigDict()  # kfac: kfac-jax, fixed lr and damping.
    c.optimizer.kfac.damping = 1e-3  # Lambda added to each Kronecker block (A x S + lambda I).
    c.optimizer.kfac.momentum = 0.9  # Heavy-ball momentum on the preconditioned gradient.
    c.optimizer.kfac.curvature_ema = 0.95  # Decay of the Kronecker-factor averages.
    # kfac-jax estimator: fisher_gradients (sampled labels) | ggn_curvature_prop | ggn_exact.
    c.optimizer.kfac.estimation_mode = "fisher_gradients"
    c.optimizer.kfac.exact_inverses = True  # Invert each damped block exactly (else factored).
    # Recompute the blocks' inverses every this many preconditioner steps (counted in steps:
    # scale it with the run's length; the factors still average every step).
    c.optimizer.kfac.inverse_update_period = 1
    # kfac_adaptive: K-FAC as Martens and Grosse run it (its estimator settings are kfac's above):
    # step size and momentum from the exact-GN quadratic model, Levenberg-Marquardt damping.
    c.optimizer.kfac_adaptive = ml_collections.ConfigDict()
    c.optimizer.kfac_adaptive.initial_damping = 1.0  # lambda at the first step.
    c.optimizer.kfac_adaptive.min_damping = 1e-8
    c.optimizer.kfac_adaptive.max_damping = 1e8
    c.optimizer.kfac_adaptive.damping_adaptation_interval = 5  # T: steps between updates of lambda.
    c.optimizer.kfac_adaptive.damping_adaptation_decay = 0.9  # lambda moves by this ** T.
    c.optimizer.kfac_adaptive.l2_reg = 0.0  # L2 in the gradient and the quadratic model.

    c.train = ml_collections.ConfigDict()
    c.train.steps = 40  # Outer iterations (the budget).
    c.train.eval_every = 2  # Evaluate the fixed validation set every this many iterations.
    # ...and every iteration once the last evaluation is within this many nats of the target
    # (0 = off): a large validation set stays affordable and the crossing is still resolved.
    c.train.eval_dense_margin = 0.0
    c.train.target_loss = 2.6  # Validation loss (nats/token, > 0) whose first crossing is recorded.
    c.train.stop_at_target = False  # Stop when the target is reached (default: run the budget).
    c.train.checkpoint_every = 10  # Save an orbax checkpoint every this many iterations.
    c.train.workdir = "runs/default"  # Outputs: config.json, metrics.jsonl, summary.json, ckpt/.
    c.train.init_from = ""  # Checkpoint folder to start params (and AdamW state) from; "" = init.
    c.train.progress = True  # Show a progress bar.
    # Measure each iteration's FLOPs (XLA's cost analysis of the step unrolled at K=1 and 2, and
    # of a forward+backward): three extra compiles. False: metrics and summary carry no FLOPs
    # (null) and the losses are the same; set it when the run is started (a run started without
    # counting stays uncounted when resumed). For tests and debugging; the benchmark counts.
    c.train.count_flops = True
    # A workdir holding another config's run is an error; true deletes that run's files
    # (ckpt/, metrics.jsonl, summary.json, config.json, identity.json, wandb/) and starts anew.
    c.train.overwrite = False

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data-parallel axis size; -1 = all devices left after fsdp.
    c.mesh.fsdp = 1  # Fully-sharded-data-parallel axis size (parameters sharded over it).
    c.mesh.num_devices = -1  # Use the first N devices of jax.devices(); -1 = all of them.

    c.wandb = ml_collections.ConfigDict()
    # auto: $WANDB_MODE if set, else online with WANDB_API_KEY, else offline | online | offline |
    # disabled.
    c.wandb.mode = "auto"
    c.wandb.project = "gnbench"  # wandb project.
    c.wandb.group = ""  # wandb group (a sweep sets it to the sweep name).
    c.wandb.name = ""  # wandb run name ("" = the workdir's name); shown as <group>/<name>.
    # The sweep's swept values for this run as JSON, e.g. {"optimizer.learning_rate": 0.003}
    # (set by gnbench sweep; "" otherwise). Logged as the wandb config's grid_point only.
    c.wandb.grid_point = ""
    return c
