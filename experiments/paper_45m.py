"""The paper's 45M GN run as its authors launched it (Abreu et al. 2025, arXiv 2510.09378).

    gnbench train --config experiments/paper_45m.py                               # one machine
    sbatch launch/gpu_cluster.sbatch                                             # GPU cluster
    launch/tpu_vm.sh train NAME ZONE                                             # TPU VM slice

Every optimizer value is the flag of the authors' template, github.com/natalieabreu/
full-gauss-newton ``templates/gn-template.sbatch`` (``EasyLM.models.llama.llama_train_gn``; the
flags it leaves out take the defaults of ``llama_train_gn.py``), cited next to the key. The
mapping of their flags to gnbench keys, and what gnbench cannot or does not reproduce (the
AdamW warm-up checkpoint the run starts from, the weight average it evaluates), are in
docs/paper_departures.md; ``tests/optim/test_paper_port.py`` checks the mapping against a port of
their loop.

Model "45m" (d=512, 4 layers, 8 heads, MLP 2048, vocab 32000, T=1024; docs/METHOD.md), float32.
Data: C4 English from Hugging Face (needs internet and ``pip install -e '.[hf]'``), tokenized with
a 32k BPE trained on it (the paper: T5's SentencePiece vocabulary of the same size; bpe is the
closest gnbench builds offline). Prepare it before a multi-node run, e.g. ``gnbench data prepare
--source hf:allenai/c4:en --tokenizer bpe --vocab-size 32000 --max-documents 10000000``.

Batch: the template's, 122 micro-batches of 32 x 1024 tokens (4.0M tokens per outer step; the
line search reads another 4.0M). docs/METHOD.md's headline figures put GN at ~240M tokens per
iteration: ``--config.data.micro_batch=256 --config.data.micro_batches=916
--config.optimizer.gn.schedule_outer_steps=100 --config.train.steps=100`` (the 150M run of
``paper_150m.py`` is at that batch).

Baselines by flag, e.g. ``--config.optimizer.name=adamw``: the AdamW values below are the
authors' ``templates/adam-template.sbatch`` (same data and 227 steps of 122 accumulated
micro-batches). Muon: the paper's code uses ``optax.contrib.muon`` both as its Muon baseline and
as GN's inner solver, so the paper's Muon baseline is ``--config.optimizer.name=muon_optax``
(``optimizer.weight_decay=0``, Muon matrices undecayed; no template sets its other values).
"""

from experiments import base

GN_TEMPLATE = "templates/gn-template.sbatch"  # In github.com/natalieabreu/full-gauss-newton.


def get_config():
    c = base.get_config()
    c.seed = 42  # llama_train_gn.py's default --seed (the run starts from a checkpoint anyway).
    c.model.name = "45m"  # gn-template: --llama.base_model='45M'.
    c.model.dtype = "float32"  # gn-template: --dtype='fp32'.
    c.data.source = "hf:allenai/c4:en"  # gn-template: --train_dataset...path='allenai/c4', 'en'.
    c.data.tokenizer = "bpe"  # gn-template: --tokenizer='google-t5/t5-base' (32k vocabulary).
    c.data.vocab_size = 32000
    c.data.seq_len = 1024  # EasyLM's dataset default sequence length, the paper's T.
    c.data.micro_batch = 32  # gn-template: --train_dataset_batch_size=32.
    c.data.micro_batches = 122  # gn-template: --inner_loop_iter=122 (one micro-batch per step).
    c.data.val_sequences = 12800  # gn-template: --eval_steps=100 x eval batch_size=128.

    o = c.optimizer
    o.name = "gauss_newton"  # gn-template: --gauss_newton=True (full GN, not prox-linear).
    g = o.gn
    g.inner = "muon_optax"  # gn-template: --optimizer_type='muon' (optax.contrib.muon).
    g.inner_learning_rate = 0.01  # gn-template: --inner_loop_lr=0.01.
    g.inner_adam_learning_rate = 0.01  # The same schedule drives every leaf there.
    g.inner_schedule = "constant_with_inner_cosine"  # gn-template: --lr_sched.
    g.inner_warmup_steps = 0  # Unused by this schedule (global_cosine's warm-up).
    g.outer_warmup_steps = 0  # gn-template: --global_warmup=0.
    g.cycle_warmup_steps = 0  # gn-template: --inner_loop_warmup=0.
    g.warmup_start = 0.1  # llama_train_gn.py: every warm-up starts at 0.1 x its peak.
    g.schedule_end = 0.0  # llama_train_gn.py default --end_lr=0.0.
    g.boundary_off_by_one = True  # llama_train_gn.py's boundaries, if the schedule is switched.
    g.schedule_outer_steps = 227  # gn-template: --total_steps=227.
    g.inner_b1 = 0.9  # gn-template: --inner_b1=0.9.
    g.inner_b2 = 0.999  # gn-template: --inner_b2=0.999.
    g.inner_weight_decay = 0.001  # gn-template: --optimizer_wd=0.001 (inner AdamW decay).
    g.inner_grad_clip = 1.0  # gn-template: --inner_clip_gradient=1 (per partition).
    g.damping = 0.0  # gn-template: --inner_loop_wd=0 (and it never reaches the GN gradient).
    g.line_search = 5  # gn-template: --linesearch=True --ls_range=5.
    g.line_search_data = "fresh"  # llama_train_gn.py: --inner_loop_iter new micro-batches.
    g.warm_start = True  # gn-template: --reset_start=False.
    g.restart_schedule = False  # gn-template: --reset_start=False (schedule never restarts).

    # The AdamW baseline (--config.optimizer.name=adamw): templates/adam-template.sbatch.
    o.learning_rate = 0.01  # adam-template: --optimizer.adamw_optimizer.lr='0.01&0.003&0.03'.
    o.schedule = "constant"  # adam-template: lr_sched=constant_with_warmup, lr_warmup_steps=0.
    o.warmup_steps = 0  # adam-template: --optimizer.adamw_optimizer.lr_warmup_steps=0.
    o.warmup_start = 0.0  # adam-template: --optimizer.adamw_optimizer.init_lr=0.0.
    o.schedule_end = 0.0  # adam-template: --optimizer.adamw_optimizer.end_lr=0.0.
    o.b1 = 0.9  # adam-template: --optimizer.adamw_optimizer.b1=0.9.
    o.b2 = 0.95  # adam-template: --optimizer.adamw_optimizer.b2=0.95.
    o.weight_decay = 0.0  # adam-template: --optimizer.adamw_optimizer.weight_decay=0.
    o.grad_clip = 1.0  # EasyLM AdamWOptimizerFactory default clip_gradient=1.0.

    c.train.steps = 227  # gn-template: --total_steps=227 outer steps.
    c.train.eval_every = 10  # gn-template: --eval_freq=10 (then every step past half the run).
    c.train.target_loss = 3.25  # The paper's target; the template sets no --target_loss.
    c.train.checkpoint_every = 1  # gn-template: --save_model_freq=1.
    c.train.workdir = "runs/paper_45m"
    c.mesh.data = -1  # gn-template: --mesh_dim='1,1,1' is one GPU; data parallel over all here.
    c.mesh.fsdp = 1  # The 45M state fits on one device; raise it to shard on small devices.
    return c
