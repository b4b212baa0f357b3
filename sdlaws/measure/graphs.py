"""Run a decoding phase eagerly or as a captured CUDA graph.

A phase (draft or verify) is a no-argument function that reads and writes only tensors that live as long as
the engine's workspace (caches, token buffers, counters), with static shapes and no host synchronisation. On a
CUDA device it is captured once, after two warm-up runs on a side stream (the usual recipe of
``torch.cuda.graphs``), and every later call replays the graph: one launch instead of hundreds of kernel
launches from Python. The warm-up runs mutate the workspace, so the caller's state tensors are snapshot
before and restored after. If capture fails (an op in a model's forward that cannot be captured), the runner
logs a warning and stays eager for good; results are identical either way, only slower.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)

#: Warm-up runs before capture (lazy cuBLAS/cuDNN initialisation must not happen during capture).
NUM_WARMUP_RUNS = 2


class PhaseRunner:
    """Call ``fn`` eagerly, or capture it as a CUDA graph on first use and replay it afterwards.

    Parameters
    ----------
    fn : callable
        The phase; takes no arguments, returns nothing, mutates workspace tensors in place.
    state : list of Tensor
        Every tensor whose value ``fn`` reads after having written it (lengths, counters, token buffers):
        restored after the warm-up runs, so capture has no visible effect.
    use_graph : bool
        Capture on a CUDA device; False (CPU, or graphs disabled) runs ``fn`` eagerly every time.
    name : str
        Used in the warning when capture fails.
    """

    def __init__(self, fn: Callable[[], None], state: list[torch.Tensor], *, use_graph: bool, name: str):
        self.fn = fn
        self.state = state
        self.use_graph = use_graph
        self.name = name
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def captured(self) -> bool:
        """Whether calls replay a CUDA graph."""
        return self.graph is not None

    def prepare(self) -> None:
        """Capture now if this runner should and has not yet (call outside timed regions)."""
        if self.use_graph and self.graph is None:
            self._capture()

    def __call__(self) -> None:
        """Run the phase once."""
        self.prepare()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn()

    def _capture(self) -> None:
        """Warm up on a side stream, capture one run, restore the state; on failure stay eager."""
        saved = [t.clone() for t in self.state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(NUM_WARMUP_RUNS):
                    self.fn()
                    self._restore(saved)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.fn()
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 -- any capture failure degrades to eager, which is always correct
            torch.cuda.synchronize()
            log.warning("CUDA graph capture of the %s phase failed (%s: %s); running it eagerly",
                        self.name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.use_graph = False
        finally:
            torch.cuda.current_stream().wait_stream(side)
            self._restore(saved)

    def _restore(self, saved: list[torch.Tensor]) -> None:
        """Copy the snapshot back into the state tensors."""
        for dst, src in zip(self.state, saved):
            dst.copy_(src)
