"""Where sampling is, for code that acts on each denoiser pass without being handed it (caches).

The sampler opens a `Trajectory` for each call (so a cache resets its state at step 0 of every
image batch and always computes the last step), and `Guided` declares how a batched CFG forward is
laid out (`branches`), so a cache can keep one state per branch. Outside sampling (training, a
direct call) there is no trajectory and caches pass every call through.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class Trajectory:
    steps: int  # sampling steps of this call
    images: int  # images in the batch
    step: int = 0  # the step now running, 0 .. steps - 1
    branches: tuple[str, ...] = ("cond",)  # the batch is these equal parts, in this order
    skipped_rows: int = 0  # batch rows (image x branch) whose pass a cache replaced, so far

    @property
    def last(self) -> bool:
        return self.step == self.steps - 1


_current: ContextVar[Trajectory | None] = ContextVar("trajectory", default=None)


def current() -> Trajectory | None:
    return _current.get()


@contextmanager
def trajectory(steps: int, images: int):
    """Open a trajectory for one sampling call."""
    token = _current.set(Trajectory(steps, images))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


@contextmanager
def branches(names: tuple[str, ...]):
    """Declare the layout of the next forward's batch: equal parts, one per guidance branch."""
    traj = _current.get()
    if traj is None:
        yield
        return
    before, traj.branches = traj.branches, tuple(names)
    try:
        yield
    finally:
        traj.branches = before
