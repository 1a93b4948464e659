"""The paper's 150M GN run (its Figure 1) with the values its launch command gives.

    sbatch --export=ALL,CONFIG=experiments/paper_150m.py launch/gpu_cluster.sbatch
    CONFIG=experiments/paper_150m.py launch/tpu_vm.sh train NAME ZONE

The authors' repository (github.com/natalieabreu/full-gauss-newton) has a template for 45M only
(``paper_45m.py``). The 150M values come from the one 150M GN command published with that code:
the "150M Full Gauss-Newton Run" of the README of github.com/gmbabreu/full-gauss-newton (a fork
of it, same ``EasyLM.models.llama.llama_train_gn`` and flags; "reproduces the main GN experiment
from Figure 1"), cited as ``README`` next to each key. Everything else is ``paper_45m.py``'s
(data, tokenizer, AdamW baseline). Model "150m": d=768, 12 layers, 16 heads, MLP 3072, vocab
32000, T=1024 (docs/METHOD.md). Batch: 1831 micro-batches of 128 x 1024 tokens = 240M tokens per
outer step, the paper's GN batch; the line search reads as many again.

The run starts from a 150M AdamW warm-up checkpoint (the README's "150M AdamW Warmup Run": 4578
steps of 32 x 1024 tokens, constant lr 3e-3 after 457 warm-up steps): ``--config.optimizer.name=
adamw --config.data.micro_batch=32 --config.data.micro_batches=1 --config.train.steps=4578
--config.optimizer.learning_rate=3e-3 --config.optimizer.schedule=warmup_constant
--config.optimizer.warmup_steps=457 --config.optimizer.weight_decay=0``, then pass its workdir
as ``--config.train.init_from``.
"""

from experiments import paper_45m


def get_config():
    c = paper_45m.get_config()
    c.model.name = "150m"  # README: --llama.base_model='150M'.
    c.data.micro_batch = 128  # README: --train_dataset_batch_size=128.
    c.data.micro_batches = 1831  # README: --inner_loop_iter=1831 (240M tokens).
    c.data.val_sequences = 6400  # README: --eval_steps=50 x eval batch_size=128.
    g = c.optimizer.gn
    g.inner = "muon_optax"  # README: --optimizer_type='muon'.
    g.inner_learning_rate = 0.003  # README: --inner_loop_lr=0.003.
    g.inner_adam_learning_rate = 0.003  # The same schedule drives every leaf there.
    g.inner_schedule = "global_cosine"  # README: --lr_sched='global_cosine'.
    g.inner_warmup_steps = 0  # README: --global_warmup=0.
    g.outer_warmup_steps = 0  # Unused by global_cosine.
    g.cycle_warmup_steps = 0  # README: --inner_loop_warmup=0.
    g.schedule_outer_steps = 500000  # README: --total_steps=500000 (the cosine's span).
    g.inner_b1 = 0.9  # README: --inner_b1=0.9.
    g.inner_b2 = 0.999  # README: --inner_b2=0.999.
    g.inner_weight_decay = 0.001  # README: --optimizer_wd=0.001.
    g.inner_grad_clip = 1.0  # README: --inner_clip_gradient=1.
    # README: --inner_loop_wd=0.01, which llama_train_gn.py's GN step adds to the loss value
    # only, never to the gradient: the authors' run had no damping (docs/paper_departures.md).
    g.damping = 0.0
    g.line_search = 10  # README: --linesearch=True --ls_range=10.
    g.warm_start = True  # README: --reset_start=False.
    g.restart_schedule = False  # README: --reset_start=False.
    c.train.steps = 100  # README: runs until stopped (--total_steps=500000); GN needs ~54.
    c.train.eval_every = 1  # README: --eval_freq=1.
    c.train.checkpoint_every = 3  # README: --save_model_freq=3.
    c.train.workdir = "runs/paper_150m"
    c.mesh.fsdp = 1  # README: --mesh_dim='1,1,8' (EasyLM: dp,fsdp,mp); raise fsdp to shard.
    return c
