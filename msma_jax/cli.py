"""The `msma-jax` command line. Subcommands register themselves in `_COMMANDS`."""
from __future__ import annotations

import argparse
import sys


def _cmd_info(args) -> int:
  import importlib.metadata as md
  import platform

  import jax

  from msma_jax import __version__
  from msma_jax.face_model import available_face_models, load_face_model
  print(f"msma-jax {__version__}  (Python {platform.python_version()}, {platform.system()})")
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
              "numpy", "opencv-python-headless", "ml-collections", "wandb", "trimesh", "scipy"):
    try:
      v = md.version(pkg)
    except md.PackageNotFoundError:
      v = "not installed"
    print(f"  {pkg:24s} {v}")
  print(f"JAX backend: {jax.default_backend()}; {jax.device_count()} device(s), "
        f"{jax.process_count()} process(es)")
  for d in jax.devices():
    print(f"  {d}")
  print("Face models:")
  for name in available_face_models():
    fm = load_face_model(name)
    s = fm.sizes
    print(f"  {name:10s} {fm.n_vertices} vertices, {fm.n_triangles} triangles, unit {fm.unit}; "
          f"coefficients id {s.id} / exp {s.exp} / tex {s.tex} (total {s.total})")
  print("  or a path: BFM_model_front.mat (Deep3DFaceRecon), converted .npz, eos .bin (eos-py)")
  return 0


def _cmd_convert_bfm(args) -> int:
  from msma_jax.face_model.bfm_convert import convert_bfm2009
  path = convert_bfm2009(args.bfm_dir, args.out)
  print(f"wrote {path}")
  return 0


def _cmd_demo(args) -> int:
  from msma_jax.inference.demo import run_demo
  summary = run_demo(args.out, face_model=args.face_model, num_random=args.num_random,
                     seed=args.seed, image_size=args.image_size)
  print(f"wrote {len(summary['faces'])} faces (PNG, OBJ, PLY, NPZ, MAT) and faces.png to "
        f"{summary['out_dir']}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="msma-jax", description="Single-image 3D face reconstruction (MSMA) in JAX/Flax.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")

  p = sub.add_parser("info", help="versions, JAX devices and available face models")
  p.set_defaults(func=_cmd_info)

  p = sub.add_parser(
      "convert-bfm", help="convert the raw Basel Face Model 2009 to the front-face model",
      description="Converts 01_MorphableModel.mat + Exp_Pca.bin (+ std_exp.txt, BFM_front_idx.mat, "
      "BFM_exp_idx.mat, facemodel_info.mat from Deep3DFaceRecon's BFM folder) the way "
      "Deep3DFaceRecon does. Output .npz (msma-jax format) or .mat (BFM_model_front.mat keys).")
  p.add_argument("bfm_dir", help="folder holding the six input files")
  p.add_argument("--out", required=True, help="output file, .npz or .mat")
  p.set_defaults(func=_cmd_convert_bfm)

  p = sub.add_parser("demo", help="render and export the mean face and random faces")
  p.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
  p.add_argument("--face-model", default="embedded", help="'embedded' or a face model file")
  p.add_argument("--num-random", type=int, default=5, help="random faces besides the mean face")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--image-size", type=int, default=224)
  p.set_defaults(func=_cmd_demo)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 0
  from msma_jax.face_model import CoefficientError, FaceModelError
  try:
    return args.func(args)
  except (FaceModelError, CoefficientError, FileNotFoundError, ValueError) as e:
    print(f"msma-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
