"""Scaling out: distributed strategies (DDP, DeepSpeed ZeRO-2/3, CPU-capable for tests), SLURM
submission with requeue, sweeps as job arrays, and DeepSpeed checkpoint export.

Only `launch/` and `tracking/` read `os.environ`.  Heavy imports (lightning, deepspeed) stay in
the submodules, so `dawn-train sweep --dry-run` starts fast."""
