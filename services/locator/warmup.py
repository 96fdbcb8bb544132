"""Load (or compile) the locator's numba kernels before the first detection needs them.

Why: numba compiles a kernel on its first call and caches the machine code on disk
(``__pycache__``). Loading the cache takes ~0.3 s; with no cache (a fresh container, a read-only
install) compiling takes ~10 s. Without a warm-up that pause would land on the first shot's
alert. :func:`warm_up_kernels` calls every compiled path once on a small constructed shot.
Pure computation, no I/O besides numba's own cache; blocks for as long as that takes.
"""

from __future__ import annotations

import time

import numpy as np

from services.locator.association import associate, echo_shadowed
from services.locator.config import LocatorConfig
from services.locator.solver import locate

_C = 343.0


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Eight sensors on a 600 m ring and their arrival times from a source near the centre."""
    angles = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    sensors = np.stack([600 * np.cos(angles), 600 * np.sin(angles), np.full(8, 10.0)], axis=1)
    source = np.array([40.0, -25.0, 0.0])
    times = np.sqrt(((sensors - source) ** 2).sum(1)) / _C
    return sensors, times


def warm_up_kernels(config: LocatorConfig | None = None) -> float:
    """Run the solver's fast and robust paths and association once; returns the seconds spent.

    Raises nothing the locator itself would not raise on a clean shot.
    """
    config = config or LocatorConfig()
    began = time.perf_counter()
    sensors, times = _scene()
    locate(sensors, times, _C, config)  # clean: the fast path
    late = times.copy()
    late[3] += 0.040  # a diffracted arrival: the robust path (consensus)
    late[6] += 0.090
    locate(sensors, late, _C, config)
    order = np.argsort(times)
    associate(  # with the listening sensors: the heard-share test too
        sensors[order], times[order] - times[order][0], np.arange(8), 0, _C, config,
        known_sensors=sensors,
    )
    # the echo test, as the engine calls it (float sensor codes): an echo of the shot 0.3 s on
    codes = np.arange(8.0)
    loud = np.full(8, 20.0)
    echo_shadowed(times + 0.3, codes, loud - 6, times, codes, loud, 6.0, 0.004)
    return time.perf_counter() - began
