"""tests/ddp_dpo_worker.py's one DPO step, launched under a DeepSpeed preset (tests/test_deepspeed_cpu.py).

DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce op (`deepspeed_shm_comm`) when its torch backend
starts: 6.5 minutes of g++ on this 2-core machine, for an op that only DeepSpeed's *inference* all-reduce uses. The
worker skips that build, so ZeRO's collectives are plain gloo (torch.distributed), as in the DDP check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    import importlib

    import ddp_dpo_worker

    # the module by name: the attribute `deepspeed.comm.torch` is the torch library (deepspeed.comm re-exports it)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None  # see the module docstring
    ddp_dpo_worker.train(Path(sys.argv[1]), int(sys.argv[2]), int(os.environ.get("RANK", 0)))
