"""The built-in trainer with two test-only seams for the resume drills (not a test module).

``python -m llmops_runtime.launch -- python drill_train.py [train options]``

* ``DRILL_SLOW_PERSIST="STEP,STEP:SECONDS"``: rank 0 holds the manifest write of those
  checkpoints for SECONDS (store fault hook), so a drill can SIGKILL the gang while a
  persist is certainly in flight (shards written, nothing committed yet) while training
  goes on. ``"STEP:@PATH"`` holds it until the file PATH exists instead: a drill that kills
  during the hold releases it afterwards, so no machine is too slow for the window.
* ``DRILL_OMIT=optimizer|scheduler|model``: that object's state is left out of every
  checkpoint and not restored (negative control: the drill must notice); ``DRILL_OMIT=ddp-hook``
  averages gradients with plain DDP, without the layout-independent hook of
  ``llmops_runtime.ddp`` (the behaviour before the issue-15 fix).

Production never runs this file; the seams are monkeypatches of this process only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from llmops_runtime import ddp as rddp
from llmops_runtime import train
from llmops_runtime.checkpoint import store as cstore
from llmops_runtime.session import Session
from torch import nn


def _slow_persist(spec: str) -> None:
    steps, _, until = spec.partition(":")
    slow = {f"step-{int(s):08d}/manifest" for s in steps.split(",") if s}
    opened = cstore.open_store

    def hold() -> None:
        if not until.startswith("@"):
            time.sleep(float(until or 1.0))
            return
        release = Path(until[1:])
        while not release.exists():  # the drill kills this process meanwhile, or releases it
            time.sleep(0.02)

    def open_slow(uri: str, **options: Any) -> cstore.Store:
        store = opened(uri, **options)
        store.fault_hook = lambda op, key: hold() if op == "write" and key.startswith(tuple(slow)) else None
        return store

    cstore.open_store = open_slow
    import llmops_runtime.checkpoint as ckpt

    ckpt.open_store = open_slow


def _omit(name: str) -> None:
    if name == "ddp-hook":
        rddp.wrap = lambda model, session, **kw: model if session.world_size <= 1 else nn.parallel.DistributedDataParallel(model)
        return
    saved, loaded = Session.state_dict, Session.load_state_dict

    def state_dict(self: Session) -> dict[str, Any]:
        state = saved(self)
        state["objects"].pop(name, None)
        return state

    def load_state_dict(self: Session, state: Any) -> None:
        kept = self._objects.pop(name, None)
        try:
            loaded(self, state)
        finally:
            if kept is not None:
                self._objects[name] = kept

    Session.state_dict, Session.load_state_dict = state_dict, load_state_dict  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("DRILL_SLOW_PERSIST"):
        _slow_persist(os.environ["DRILL_SLOW_PERSIST"])
    if os.environ.get("DRILL_OMIT"):
        _omit(os.environ["DRILL_OMIT"])
    sys.exit(train.main())
