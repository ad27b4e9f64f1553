"""What the per-class bound benchmarks share (``cell_inline_bound.py``, ``split_units_bound.py``):
rounds alternating torch.nn with fastrnn under each forced setting of one field of this
class's ``product_routing.BOUNDS`` row, the minimum per side."""
import time

from fastrnn import machine, product_routing


def timed(fn, calls: int) -> float:
    """Microseconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def best_of_rounds(field: str, settings: dict, reference, fast, calls: int, repeat: int) -> dict:
    """{side: min us per call} over ``repeat`` rounds, each timing ``reference`` (torch.nn)
    once, then ``fast`` once under each of ``settings`` ({side: value of ``field``}), each
    after one untimed warm-up call. The class's row is restored afterwards."""
    isa = machine.cpu_isa()
    row = product_routing.BOUNDS[isa]
    best: dict = {}
    try:
        for _ in range(repeat):
            for side in ("torch.nn", *settings):
                run = reference if side == "torch.nn" else fast
                if side != "torch.nn":
                    product_routing.BOUNDS[isa] = row._replace(**{field: settings[side]})
                run()
                best[side] = min(best.get(side, float("inf")), timed(run, calls))
    finally:
        product_routing.BOUNDS[isa] = row
    return best
