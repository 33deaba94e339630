"""The LC engine: the algorithm's pieces for any trainer, the loop that drives them, its state.

- :mod:`.core`: :class:`Engine`, its per-task state and the pieces (direct compression, penalty,
  C step, multiplier step, finalize);
- :mod:`.loop`: :meth:`Engine.run` and the end-of-step sequence it shares with trainers;
- :mod:`.state`: ``state_dict`` / ``load_state_dict`` and the plan's fingerprint;
- :mod:`.events`: the event bus and the per-step record;
- :mod:`.driver`: the schedule for trainers that own the loop (Lightning, Hugging Face);
- :mod:`.distributed`: DDP helpers, and sharing C steps across ranks;
- :mod:`.shards`: where a task's Δ(θ) and λ live (whole, or a rank's shards of FSDP2 parameters);
- :mod:`.sharing`: the tasks' costs, their assignment to ranks, the θ broadcast.
"""

from lcdsl.engine.core import Engine
from lcdsl.engine.events import EVENTS, EventBus, StepRecord
from lcdsl.engine.state import STATE_FORMAT, plan_fingerprint
from lcdsl.plugins.origin import operator_origin, plugin_versions

__all__ = [
    "Engine", "EventBus", "EVENTS", "StepRecord", "STATE_FORMAT", "plan_fingerprint", "operator_origin",
    "plugin_versions",
]  # fmt: skip
