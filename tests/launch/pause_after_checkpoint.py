"""``python pause_after_checkpoint.py train ARGS``: ``gnbench train`` that stops for good once
the checkpoint of step ``GNBENCH_TEST_PAUSE_STEP`` is complete on disk.

Every process then writes ``paused.<process index>`` into ``GNBENCH_TEST_PAUSE_DIR`` and sleeps,
so a test can kill processes at a known point (after a whole checkpoint, before the run ends)
without racing the trainer. Everything else is ``python -m gnbench.cli train ARGS``.
"""

import os
import runpy
import sys
import time
from pathlib import Path

from gnbench.train import checkpoint

PAUSE_STEP = int(os.environ["GNBENCH_TEST_PAUSE_STEP"])
PAUSE_DIR = Path(os.environ["GNBENCH_TEST_PAUSE_DIR"])
_save = checkpoint.Checkpointer.save


def _save_then_pause(self, step, state, meta):
    _save(self, step, state, meta)
    if step == PAUSE_STEP:
        import jax

        self.wait()
        PAUSE_DIR.mkdir(parents=True, exist_ok=True)
        (PAUSE_DIR / f"paused.{jax.process_index()}").write_text(str(os.getpid()))
        while True:
            time.sleep(1)


checkpoint.Checkpointer.save = _save_then_pause
sys.argv = ["gnbench.cli", *sys.argv[1:]]
runpy.run_module("gnbench.cli", run_name="__main__", alter_sys=True)
