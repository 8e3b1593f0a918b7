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


def _cmd_prepare_data(args) -> int:
  """Builds msma_face_images (from a photo folder / raw layout) or msma_synthetic_faces."""
  import pathlib

  from data_pipelines import tfds_builders
  out = pathlib.Path(args.out)
  if args.synthetic:
    from data_pipelines.synthetic import SyntheticOptions
    builder = tfds_builders.MsmaSyntheticFaces(
        num_examples=args.synthetic, seed=args.seed, face_model=args.face_model,
        options=SyntheticOptions(max_yaw_deg=args.max_yaw, max_pitch_deg=args.max_pitch,
                                 max_roll_deg=args.max_roll),
        image_format=args.image_format, jpeg_quality=args.jpeg_quality,
        progress=not args.no_progress, data_dir=str(out))
  else:
    if not args.source:
      raise ValueError("give a SOURCE folder of photos, or --synthetic N")
    if not pathlib.Path(args.source).is_dir():
      raise FileNotFoundError(f"{args.source}: source folder not found")
    builder = tfds_builders.MsmaFaceImages(
        source_dir=args.source, layout=args.layout, detector=args.detector,
        max_faces=args.max_faces if args.max_faces > 0 else None, min_side=args.min_side,
        upsample=args.upsample, use_landmark_files=not args.ignore_landmark_files,
        image_format=args.image_format, jpeg_quality=args.jpeg_quality,
        num_workers=args.workers, progress=not args.no_progress, data_dir=str(out))
  if not args.synthetic and not args.overwrite and pathlib.Path(builder.data_dir).exists():
    print(f"{builder.data_dir} already exists; reusing it (--overwrite rebuilds)")
  try:
    path = tfds_builders.build(builder, overwrite=args.overwrite)
  finally:
    s = builder.summary
    if s.images:
      print(s.format())
      for m in s.messages[: args.show_skipped]:
        print(f"  skipped: {m}")
      if len(s.messages) > args.show_skipped:
        print(f"  ... {len(s.messages) - args.show_skipped} more (all in "
              f"{tfds_builders.SUMMARY_FILE} beside the records)")
  source = tfds_builders.load_prepared(path)
  print(f"wrote {len(source)} records to {path}")
  if args.contact_sheet:
    from data_pipelines.contact_sheet import write_contact_sheet
    if len(source):
      sheet = write_contact_sheet(source, args.contact_sheet, count=args.sheet_count,
                                  columns=args.sheet_columns)
      print(f"wrote contact sheet {sheet}")
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

  p = sub.add_parser(
      "prepare-data", help="build a training dataset (ArrayRecord) from photos or synthetic faces",
      description="Detects faces (dlib) and 68 landmarks (or reads .pts/.txt files beside the "
      "photos, or a 300W-LP / AFLW2000-3D annotation), aligns 224x224 crops, computes skin masks "
      "and writes the TFDS dataset msma_face_images as ArrayRecord under --out; or renders "
      "--synthetic N faces (msma_synthetic_faces). Unusable photos are skipped and counted.")
  p.add_argument("source", nargs="?", help="folder of photos (recursive: jpg, png, bmp, webp)")
  p.add_argument("--out", required=True, help="TFDS data dir; the dataset goes to OUT/<name>/<ver>")
  p.add_argument("--layout", default="folder", choices=["folder", "300w_lp", "aflw2000_3d"])
  p.add_argument("--detector", default="hog", choices=["hog", "cnn"])
  p.add_argument("--max-faces", type=int, default=1, help="faces per photo, largest first (0 = all)")
  p.add_argument("--min-side", type=int, default=32, help="skip photos with a smaller shorter side")
  p.add_argument("--upsample", type=int, default=1, help="dlib upsampling (finds smaller faces)")
  p.add_argument("--ignore-landmark-files", action="store_true",
                 help="detect even where a .pts/.txt landmark file is present")
  p.add_argument("--workers", type=int, default=0, help="detection processes (0 = inline)")
  p.add_argument("--synthetic", type=int, default=0, metavar="N", help="render N synthetic faces")
  p.add_argument("--seed", type=int, default=0, help="synthetic faces: random seed")
  p.add_argument("--face-model", default="embedded", help="synthetic faces: face model")
  p.add_argument("--max-yaw", type=float, default=60.0, help="synthetic faces: degrees")
  p.add_argument("--max-pitch", type=float, default=20.0, help="synthetic faces: degrees")
  p.add_argument("--max-roll", type=float, default=20.0, help="synthetic faces: degrees")
  p.add_argument("--image-format", default="jpeg", choices=["jpeg", "png"])
  p.add_argument("--jpeg-quality", type=int, default=95)
  p.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  p.add_argument("--contact-sheet", metavar="PNG", help="also write a contact sheet of the crops")
  p.add_argument("--sheet-count", type=int, default=16)
  p.add_argument("--sheet-columns", type=int, default=4)
  p.add_argument("--show-skipped", type=int, default=20, help="skip messages printed")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_cmd_prepare_data)
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
