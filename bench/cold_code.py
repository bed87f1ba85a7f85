"""How much slower a few lines of Python run when the CPU has just spent 20 ms elsewhere.

On a bare-metal machine the two figures are close; on nested virtual machines (where this project's
benchmarks were run) code that has gone cold since the last timer tick is many times slower, which is
most of what a slot's hand-over between two jobs costs there. Run pinned: `taskset -c 0 python
bench/cold_code.py`.
"""

from __future__ import annotations

import time


def ten_steps_seconds(after_elsewhere: bool, samples: int = 300) -> float:
    timings = []
    for _ in range(samples):
        if after_elsewhere:
            until = time.perf_counter() + 0.02
            while time.perf_counter() < until:
                pass
        started = time.perf_counter()
        total = 0
        for _ in range(10):
            total = total * 3 + 1
        timings.append(time.perf_counter() - started)
    return sorted(timings)[samples // 2]


if __name__ == "__main__":
    warm, cold = ten_steps_seconds(False), ten_steps_seconds(True)
    print(f"a ten-step loop, median: {warm * 1e6:.2f} us warm, {cold * 1e6:.2f} us after 20 ms elsewhere")
