"""``python hold_after_checkpoint.py train ARGS``: ``gnbench train`` that, once the checkpoint of
step ``GNBENCH_TEST_HOLD_STEP`` is on disk, writes ``held`` into ``GNBENCH_TEST_HOLD_DIR`` and
waits there until a ``go`` file appears, then carries on to the end of the run.

A test can so act while the run is certainly going (it holds its workdir lock), without racing it.
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
        self.wait()
        HOLD_DIR.mkdir(parents=True, exist_ok=True)
        (HOLD_DIR / "held").write_text(str(os.getpid()))
        deadline = time.time() + 300
        while not (HOLD_DIR / "go").exists() and time.time() < deadline:
            time.sleep(0.05)


checkpoint.Checkpointer.save = _save_then_hold
sys.argv = ["gnbench.cli", *sys.argv[1:]]
runpy.run_module("gnbench.cli", run_name="__main__", alter_sys=True)
