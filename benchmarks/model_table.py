"""Parameters and FLOPs of the encoder variants (backbone x fusion x attention), as a Markdown table.

    python benchmarks/model_table.py                      # print the table
    python benchmarks/model_table.py --write docs/MODELS.md   # replace the table in the doc

Parameters: trainable `nnx.Param` entries (batch-norm running statistics excluded), BFM heads
(257 outputs). FLOPs: XLA's cost analysis of the jitted eval-mode forward pass at batch 1,
224 x 224 (`jax.jit(f).lower(...).cost_analysis()["flops"]`; a multiply-add counts 2; lowered with
`conv_impl="xla"` so every convolution is one XLA convolution). XLA counts the products that
touch real pixels, not zero padding, so ResNet-50 comes to 7.9 GFLOPs where the usual
"4.1 GMACs" (8.2 GFLOPs) includes padded taps.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.face_model import BFM_SIZES
from msma_jax.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- model_table begin -->", "<!-- model_table end -->"


def load_configs():
  spec = importlib.util.spec_from_file_location("msma_configs_model", ROOT / "configs" / "model.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def measure(config, size: int = 224) -> tuple[int, int, float]:
  """(parameters, backbone parameters, forward FLOPs at batch 1) of one config.model."""
  config.conv_impl = "xla"
  model = build_model(config, BFM_SIZES)
  model.eval()
  count = lambda m: sum(v.size for v in jax.tree.leaves(nnx.state(m, nnx.Param)))
  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x).to_flat())
  lowered = fwd.lower(state, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return count(model), count(model.backbone), float(cost["flops"])


def table(backbones=("r18", "r34", "r50", "mbv2")) -> str:
  configs = load_configs()
  lines = ["| variant | backbone | fusion | attention | params (M) | of which backbone (M) | "
           "GFLOPs (224², batch 1) | vs plain backbone |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
  for bb in backbones:
    base_flops = None
    for pattern, fusion, kind in configs.BACKBONE_GRID:
      name = pattern.format(bb=bb)
      cfg = configs.get_model_config(name)
      params, bb_params, flops = measure(cfg)
      base_flops = base_flops or flops
      rel = "" if flops == base_flops else f"{flops / base_flops - 1:+.1%}"
      lines.append(f"| `{name}` | {cfg.backbone} | {'C2-C5 concat' if fusion else 'off'} | "
                   f"{kind} | {params / 1e6:.2f} | {bb_params / 1e6:.2f} | {flops / 1e9:.2f} | "
                   f"{rel} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--write", type=pathlib.Path, help="Markdown file whose table to replace")
  p.add_argument("--backbones", default="r18,r34,r50,mbv2")
  args = p.parse_args(argv)
  t = table(tuple(args.backbones.split(",")))
  print(t)
  if args.write:
    text = args.write.read_text()
    if BEGIN not in text or END not in text:
      raise SystemExit(f"{args.write}: no '{BEGIN}' ... '{END}' markers to replace between")
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{t}\n{END}",
                  text, flags=re.S)
    args.write.write_text(text)


if __name__ == "__main__":
  main()
