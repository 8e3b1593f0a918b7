"""Checks `--config FILE[:ARG]` and its `--config.a.b=value` overrides before absl parses them.

ml-collections loads a config file lazily and reports a missing file, a syntax error, a missing
`get_config` or an unknown override key as a chain of tracebacks. Loading the file here first turns
each into one `ConfigError` line naming the file or the key:

    --config configs/nope.py: config file not found
    --config my.py: syntax error at line 3: invalid syntax
    --config.train.nosuch: unknown config key 'nosuch' in config.train (has: batch_size, ...)
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Optional

from ml_collections import ConfigDict

from configs.errors import ConfigError

# Module names the checked files are loaded under (distinct from ml-collections' own `config_config`
# so that nothing is shared with the load absl does afterwards).
_MODULE_PREFIX = "_msma_config_check_"


def config_spec(argv: list[str]) -> Optional[str]:
  """The value of `--config` in `argv` (`--config X` or `--config=X`), or None."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def override_keys(argv: list[str]) -> list[str]:
  """Dotted keys of the `--config.a.b[=value]` overrides in `argv` (`a.b`)."""
  return [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]


def _load_module(path: pathlib.Path):
  name = _MODULE_PREFIX + str(abs(hash(str(path.resolve()))))
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"--config {path}: not a Python file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"--config {path}: syntax error at line {e.lineno}: {e.msg}") from None
  except Exception as e:   # whatever the file itself raises while it is imported
    raise ConfigError(f"--config {path}: fails to load ({type(e).__name__}: {e})") from None
  finally:
    sys.modules.pop(name, None)
  return module


def load_config_file(spec: str) -> ConfigDict:
  """`FILE[:ARG]` -> `get_config([ARG])` the way ml-collections splits it (at the first ':').

  Raises ConfigError (one line naming the file) for a missing file, a syntax error, no
  `get_config`, an argument `get_config` rejects, or a result that is not a ConfigDict.
  """
  path_text, sep, arg = spec.partition(":")
  path = pathlib.Path(path_text).expanduser()
  if not path.exists():
    raise ConfigError(f"--config {path_text}: config file not found")
  if not path.is_file():
    raise ConfigError(f"--config {path_text}: not a file")
  module = _load_module(path)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"--config {path_text}: defines no get_config() function")
  try:
    config = get_config(arg) if sep else get_config()
  except Exception as e:   # an unknown variant, a wrong argument count, ...
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ConfigError(msg if path_text in msg else f"--config {spec}: {msg}") from None
  if not isinstance(config, ConfigDict):
    raise ConfigError(f"--config {spec}: get_config() returned {type(config).__name__}, "
                      "not an ml_collections ConfigDict")
  return config


def check_override_key(config: ConfigDict, key: str) -> None:
  """Raises ConfigError unless `config.<key>` exists (`key` dotted, e.g. `train.num_steps`)."""
  node, done = config, []
  for part in key.split("."):
    if isinstance(node, (ConfigDict, dict)) and part in node:
      node = node[part]
    elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
      node = node[int(part)]
    else:
      where = "config" + "".join(f".{p}" for p in done)
      has = (f" (has: {', '.join(sorted(node.keys()))})"
             if isinstance(node, (ConfigDict, dict)) else f" ({where} is a value, not a section)")
      raise ConfigError(f"--config.{key}: unknown config key {part!r} in {where}{has}")
    done.append(part)


def check_config_args(argv: list[str]) -> None:
  """Loads the `--config` file of `argv` and checks every override key against it."""
  spec = config_spec(argv)
  if spec is None:
    return   # parse_train_args answers the missing flag
  config = load_config_file(spec)
  for key in override_keys(argv):
    check_override_key(config, key)
