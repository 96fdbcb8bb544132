"""Each fault case of ``bench/faults.py``, with real processes and short timeouts: a crash
or an outage loses no accepted detection, a repeated webhook is the same message, and alerts
flow again afterwards. (Alerts lost and shots alerted under two incidents are the bench's
figures: not yet 0 in every case, see the README.)

One run of the bench (all cases on one stream, one infrastructure) serves every case's test;
timings are the bench's to report, not asserted here (a loaded machine is slower, not wrong).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from faults import CASES  # noqa: E402

SESSION_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/faults.py"), "--fault-s", "4", "--before-s", "4",
         "--after-s", "10", "--session-timeout-ms", str(SESSION_TIMEOUT_MS), "--zones", "8",
         "--restart-s", "0.5"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_the_fault_loses_no_accepted_detection_and_the_pipeline_recovers(
    run: dict[str, Any], case: str
) -> None:
    got = next(c for c in run["cases"] if c["case"] == case)
    assert got["detections_acknowledged"] > 0 and got["shots_fired"] > 0, got
    assert got["detections_lost"] == 0, got  # every 202-accepted detection is on the topic
    assert got["webhook_id_with_two_bodies"] == 0, got  # a repeat is the same message
    assert got["alerted_after_fault"], got  # shots fired after the fault are alerted again
