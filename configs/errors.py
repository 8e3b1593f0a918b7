"""The one error type for config mistakes.

Every check of a config value (the per-section validators in `msma_jax/train/config_checks.py`, the
encoder spec, the optimizer, the mesh, `config.init`) raises `ConfigError` with a message that starts
with the key (`config.loss.landmark must be finite, got nan`). It lives here, with the defaults, so
that every layer can raise it without importing anything above itself.
"""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and what is wrong."""
