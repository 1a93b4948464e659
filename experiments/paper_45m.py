"""The paper's 45M experiment (Abreu et al. 2025, arXiv 2510.09378): full GN on C4, fp32.

    gnbench train --config experiments/paper_45m.py                               # one machine
    sbatch launch/gpu_cluster.sbatch                                             # GPU cluster
    launch/tpu_vm.sh train NAME ZONE                                             # TPU VM slice

Model "45m" (d=512, 4 layers, 8 heads, MLP 2048, vocab 32000, T=1024; docs/METHOD.md), float32 as in
the paper. Data: C4 English from Hugging Face (needs internet and ``pip install -e '.[hf]'``),
tokenized once with a 32k BPE trained on it (the paper used T5's SentencePiece vocabulary of the
same size; bpe is the closest gnbench builds offline). Prepare it before a multi-node run, e.g.
``gnbench data prepare --source hf:allenai/c4:en --tokenizer bpe --vocab-size 32000
--max-documents 10000000`` (the trainer finds the prepared folder; without it, process 0
prepares the default 100k documents first).

Batch: docs/METHOD.md puts every method above its own critical batch: GN and SOAP at ~240M
tokens per iteration, AdamW and Muon at ~40M. With micro-batches of 256 x 1024 = 262,144 tokens
that is K = 916 (240.1M tokens; GN's line search reads another K) and K = 153 (40.1M) for AdamW
and Muon: ``--config.optimizer.name=adamw --config.data.micro_batches=153``. The target is the
paper's validation loss 3.25 (full GN: 54 iterations; SOAP: 292).

Muon: the paper's code uses ``optax.contrib.muon`` both as its Muon baseline
(``EasyLM/optimizers.py``, ``MuonOptimizerFactory``) and as GN's inner solver, so the paper's Muon
baseline is ``--config.optimizer.name=muon_optax`` (as there: ``optimizer.weight_decay=0``, Muon
matrices undecayed; ``optimizer.muon.adam_weight_decay`` = its decay; ``muon.adam_learning_rate``
= ``learning_rate``). ``muon`` is the field's reference Muon (github.com/KellerJordan/Muon), a
different algorithm (no bias correction; see ``gnbench/optim/muon_optax.py``). GN's inner solver
here is ``muon_optax`` too.
"""

from experiments import base


def get_config():
    c = base.get_config()
    c.model.name = "45m"
    c.model.dtype = "float32"  # The paper trains in fp32; bfloat16 is an option, not the paper.
    c.data.source = "hf:allenai/c4:en"
    c.data.tokenizer = "bpe"
    c.data.vocab_size = 32000
    c.data.seq_len = 1024
    c.data.micro_batch = 256  # 262,144 tokens; divisible by 8-256 devices.
    c.data.micro_batches = 916  # GN/SOAP batch ~240M tokens (AdamW/Muon: 153, ~40M).
    c.data.val_sequences = 1024  # ~1M held-out tokens per evaluation.
    c.optimizer.name = "gauss_newton"
    # The paper's inner solver is optax.contrib.muon (AdamW for embed/head): EasyLM/models/llama/
    # llama_train_gn.py build_optimizer, --optimizer_type='muon' in templates/gn-template.sbatch
    # (github.com/natalieabreu/full-gauss-newton). "muon" would be the field's reference Muon.
    c.optimizer.gn.inner = "muon_optax"
    c.optimizer.gn.line_search = 5
    c.optimizer.gn.warm_start = True
    c.train.steps = 100  # GN reaches 3.25 in ~54 iterations.
    c.train.eval_every = 2
    c.train.target_loss = 3.25
    c.train.checkpoint_every = 2  # An iteration is expensive: lose at most two.
    c.train.workdir = "runs/paper_45m"
    c.mesh.data = -1  # Data parallel over every device of every process.
    c.mesh.fsdp = 1  # The 45M state fits on one device; raise it to shard on small devices.
    return c
