"""Runs a Python snippet in a fresh interpreter with N virtual CPU devices (JAX reads the flag at
start-up, so multi-device tests cannot share the test process)."""
import os
import subprocess
import sys
import textwrap


def run_with_devices(code: str, n_devices: int = 8, timeout: int = 600) -> str:
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                        text=True, env=env, timeout=timeout)
  if proc.returncode:
    raise AssertionError(f"multi-device snippet failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc.stdout
