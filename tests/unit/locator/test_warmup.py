"""The warm-up leaves every compiled kernel ready, so no first shot waits for numba."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.locator import association_jit, solver_jit

pytestmark = pytest.mark.skipif(
    solver_jit.KERNEL is None or association_jit.CORE is None, reason="numba not installed"
)

_CHECK = """
from services.locator import association_jit, solver_jit
from services.locator.warmup import warm_up_kernels
kernels = (
    solver_jit.KERNEL, solver_jit.ROBUST_KERNEL, association_jit.CORE, association_jit.ECHO,
    association_jit.HEARD,
)
assert not any(k.signatures for k in kernels), "compiled before the warm-up"
warm_up_kernels()
print(",".join(str(len(k.signatures)) for k in kernels))
"""


def test_warm_up_compiles_every_kernel_before_any_detection() -> None:
    # a fresh interpreter: in this one other tests have long compiled them
    done = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "1,1,1,1,1"
