"""mcphost.host.batch: coalescing concurrent calls to a batch tool into batches.

:class:`BatchFormer` decides which queued calls go together and when (no I/O, time passed
in); :class:`LatencyModel` learns a tool's service time against batch size and picks
the largest batch that keeps a latency target.
"""

from .former import Batch, BatchFormer, FormerSettings, LevelPolicy, Pending
from .model import LatencyModel

__all__ = ["Batch", "BatchFormer", "FormerSettings", "LatencyModel", "LevelPolicy", "Pending"]
