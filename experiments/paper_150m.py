"""The paper's 150M experiment: ``paper_45m.py`` with the 150M model (d=768, 12 layers, 16 heads,
MLP 3072, vocab 32000, T=1024; docs/METHOD.md), same data, batches and target.

    sbatch --export=ALL,CONFIG=experiments/paper_150m.py launch/gpu_cluster.sbatch
    CONFIG=experiments/paper_150m.py launch/tpu_vm.sh train NAME ZONE
"""

from experiments import paper_45m


def get_config():
    c = paper_45m.get_config()
    c.model.name = "150m"
    c.train.steps = 100
    c.train.workdir = "runs/paper_150m"
    c.mesh.fsdp = 1  # Parameters + GN inner state of 150M fit an 80 GB GPU; shard when they don't.
    return c
