"""Process-level tuning that the services' mains apply once started."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import gc
from shared.runtime import FULL_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, tune_gc_for_latency
young, middle, full = gc.get_threshold()
tune_gc_for_latency()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()  # the start-up heap is frozen
assert gc.get_threshold() == (young, MIDDLE_COLLECTION_EVERY, FULL_COLLECTION_EVERY)
# the middle generation in shorter, more frequent passes ...
assert MIDDLE_COLLECTION_EVERY < middle
# ... and full collections at least 100 times rarer in young collections than by default
assert MIDDLE_COLLECTION_EVERY * FULL_COLLECTION_EVERY >= 100 * middle * full
print("ok")
"""


def test_gc_tuning_freezes_the_start_up_heap_shortens_middle_passes_and_spaces_out_full_ones(
) -> None:
    # in a fresh interpreter: freezing this test session's heap would outlive the test
    done = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
