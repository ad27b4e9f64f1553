"""The one-shot GPU visit (``benchmarks/gpu_visit.py``): build, correctness, sanitizer and
benchmark stages, each in its own subprocess under a time budget, writing one evidence file.

Modules: ``evidence`` (the JSON schema, its validator and the machine record), ``stages``
(running stages under budgets), ``plan`` (which stages a GPU visit or a dry run makes),
``build`` (the CUDA extension, or the compile check),
``records_plugin`` (pytest results -> correctness records), ``modules_check`` (module parity
with torch.nn/cuDNN), ``sanitizer`` (compute-sanitizer runs and its tiny case), ``grid``
(the timed benchmark grid), ``report`` (markdown and the short table printed last).
Each stage worker appends records to a JSON-lines file, so what a stage measured before its
budget ran out survives the kill.
"""
