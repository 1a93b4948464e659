"""``python tests/hold_after_checkpoint.py train ARGS``: ``gnbench train`` that, once the
checkpoint of step ``GNBENCH_TEST_HOLD_STEP`` is complete on disk, writes ``held.<process index>``
into ``GNBENCH_TEST_HOLD_DIR`` and waits there until a ``go`` file appears (at most 300 s), then
carries on to the end of the run.

A test can so act while the run is certainly going (it holds its workdir lock), or kill its
processes at a known point (after a whole checkpoint, before the run ends), without racing the
trainer. Everything else is ``python -m gnbench.cli train ARGS``.
"""

import os
import runpy
import sys
import time
from pathlib import Path

from gnbench.train import checkpoint

HOLD_STEP = int(os.environ["GNBENCH_TEST_HOLD_STEP"])
HOLD_DIR = Path(os.environ["GNBENCH_TEST_HOLD_DIR"])
_save = checkpoint.Checkpointer.save


def _save_then_hold(self, step, state, meta):
    _save(self, step, state, meta)
    if step == HOLD_STEP:
        import jax

        self.wait()
        HOLD_DIR.mkdir(parents=True, exist_ok=True)
        (HOLD_DIR / f"held.{jax.process_index()}").write_text(str(os.getpid()))
        deadline = time.time() + 300
        while not (HOLD_DIR / "go").exists() and time.time() < deadline:
            time.sleep(0.05)


checkpoint.Checkpointer.save = _save_then_hold
sys.argv = ["gnbench.cli", *sys.argv[1:]]
runpy.run_module("gnbench.cli", run_name="__main__", alter_sys=True)
