"""Multi-host start-up: `jax.distributed.initialize` when configured (before any JAX computation).

config.distributed: enabled (bool), coordinator_address ("host:port"), num_processes, process_id,
local_device_ids (optional). On TPU pods and SLURM/Kubernetes clusters `enabled=True` with the
other fields empty lets JAX detect them. On CPUs (tests, clusters of CPU hosts) cross-process
collectives go through gloo.
"""
from __future__ import annotations

import jax

_initialized = False


def maybe_initialize_distributed(c) -> bool:
  global _initialized
  if _initialized or c is None or not c.get("enabled", False):
    return False
  kwargs = {}
  if c.get("coordinator_address"):
    kwargs["coordinator_address"] = c.coordinator_address
  if c.get("num_processes") is not None and int(c.num_processes) > 0:
    kwargs["num_processes"] = int(c.num_processes)
  if c.get("process_id") is not None and int(c.process_id) >= 0:
    kwargs["process_id"] = int(c.process_id)
  if c.get("local_device_ids"):
    kwargs["local_device_ids"] = list(c.local_device_ids)
  if c.get("cpu_collectives", "gloo"):
    jax.config.update("jax_cpu_collectives_implementation", c.get("cpu_collectives", "gloo"))
  jax.distributed.initialize(**kwargs)
  _initialized = True
  return True
