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


def _cmd_evaluate(args) -> int:
  """Runs one benchmark protocol; the report folder holds report.md, CSV tables and PNG figures."""
  log_fn, run = None, None
  if args.wandb:
    import wandb
    run = wandb.init(project=args.wandb, job_type="evaluation",
                     config={k: str(v) for k, v in vars(args).items() if k != "func"})
    log_fn = run
  common = dict(face_model=args.face_model, progress=not args.no_progress, log_fn=log_fn)
  try:
    if args.protocol == "synthetic":
      from msma_jax.evaluation.synthetic import run_synthetic
      out = run_synthetic(args.out, predictor=args.predictor, per_cell=args.per_cell, seed=args.seed,
                          oracle=args.oracle, batch_size=args.batch_size, **common)
      for name, r in out["results"].items():
        print(f"{name:24s} vertex RMSE {r['vertex_rmse_rigid_mm']:.2f} mm (rigid), "
              f"{r['vertex_rmse_similarity_mm']:.2f} mm (similarity), 2D NME "
              f"{r['nme_2d_percent']:.2f} %, pose {r['pose_error_deg']:.2f} deg")
      print(f"{out['faces']} faces, set fingerprint {out['fingerprint']}")
    elif args.protocol == "micc":
      from msma_jax.evaluation.micc import run_micc
      out = run_micc(args.out, args.dataset, args.reconstructions, settings=args.settings,
                     landmarks_root=args.landmarks, scan_unit_mm=args.scan_unit_mm,
                     recon_unit_mm=args.recon_unit_mm, crop_radius_mm=args.crop_radius_mm, **common)
      for r in out["rows"]:
        print(f"{r['setting']:20s} {r['mean_rmse_mm']:.2f} ± {r['std_mm']:.2f} mm "
              f"({r['subjects']} subjects)")
    elif args.protocol == "now":
      from msma_jax.evaluation.now import run_now
      out = run_now(args.out, args.dataset, args.predictions, image_list=args.image_list,
                    challenge=args.challenge, scan_unit_mm=args.scan_unit_mm, **common)
      for r in out["rows"]:
        if r["images"]:
          print(f"{r['challenge']:24s} median {r['median_mm']:.2f} mean {r['mean_mm']:.2f} "
                f"std {r['std_mm']:.2f} mm ({r['images']} images)")
    else:
      from msma_jax.evaluation.aflw2000 import run_aflw2000
      out = run_aflw2000(args.out, args.dataset, predictor=args.predictor,
                         batch_size=args.batch_size, limit=args.limit, **common)
      for r in out["rows"]:
        print(f"{r['bin']:24s} NME 2D {r['nme_2d_percent']:.2f} %  3D {r['nme_3d_percent']:.2f} % "
              f"({r['images']} images)")
  finally:
    if run is not None:
      run.finish()
  excluded = out.get("excluded") or {}
  if excluded:
    print("excluded: " + ", ".join(f"{n} {reason}" for reason, n in sorted(excluded.items())))
  print(f"report: {out['report']}")
  return 0


def _add_evaluate_parser(sub) -> None:
  p = sub.add_parser(
      "evaluate", help="benchmark protocols: synthetic, MICC Florence, NoW, AFLW2000-3D",
      description="Writes report.md, CSV tables and PNG figures (cumulative error curves, per-vertex "
      "heat maps) to --out. Bad inputs (missing scans, other topologies, subjects without a "
      "reconstruction) are excluded with one line each and counted in the report.")
  proto = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)

  def common(q, predictor: bool):
    q.add_argument("--out", required=True, help="report folder")
    q.add_argument("--face-model", default="embedded", help="'embedded' or a face model file")
    q.add_argument("--wandb", metavar="PROJECT", help="also log the numbers to a W&B run")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    if predictor:
      q.add_argument("--predictor", default="mean",
                     help="'mean' (mean face), a registered NAME[:ARG], or 'package.module:factory"
                     "[:ARG]' (default: %(default)s)")
      q.add_argument("--batch-size", type=int, default=8)
    q.set_defaults(func=_cmd_evaluate)

  q = proto.add_parser("synthetic", help="rendered held-out set with ground truth (synthetic-v1)")
  common(q, True)
  q.add_argument("--per-cell", type=int, default=8, help="faces per yaw x expression x lighting cell")
  q.add_argument("--seed", type=int, default=0)
  q.add_argument("--oracle", action="store_true", help="add the ground-truth predictor (sanity row)")

  q = proto.add_parser("micc", help="MICC Florence: per-video mean shapes vs scans")
  q.add_argument("dataset", help="MICC Florence root (subject_XX/Model/frontal1/obj/*.obj)")
  q.add_argument("reconstructions", help="RECON/subject_XX/<setting>/*.obj|ply or <setting>.obj|ply")
  common(q, False)
  q.add_argument("--landmarks", help="scan landmarks root (subject_XX/Model/frontal1/obj/*.ljson)")
  q.add_argument("--settings", nargs="+", default=["Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor"])
  q.add_argument("--crop-radius-mm", type=float, default=95.0)
  q.add_argument("--scan-unit-mm", type=float, default=1.0)
  q.add_argument("--recon-unit-mm", type=float, default=None,
                 help="default: the face model's unit for its topology, else 1 (mm)")

  q = proto.add_parser("now", help="NoW scan-to-mesh error")
  q.add_argument("dataset", help="NoW root (scans/, scans_lmks_onlypp/, imagepathsvalidation.txt)")
  q.add_argument("predictions", help="PRED/SUBJECT/CHALLENGE/IMAGE.obj|ply (+ .npy|.txt 7 landmarks)")
  common(q, False)
  q.add_argument("--image-list", help="default: DATASET/imagepathsvalidation.txt")
  q.add_argument("--challenge", help="only one of multiview_neutral, multiview_expressions, "
                 "multiview_occlusions, selfie")
  q.add_argument("--scan-unit-mm", type=float, default=1.0)

  q = proto.add_parser("aflw2000", help="AFLW2000-3D 68-point NME by yaw bin")
  q.add_argument("dataset", help="folder of imageNNNNN.jpg + imageNNNNN.mat")
  common(q, True)
  q.add_argument("--limit", type=int, default=None, help="only the first N images")


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

  _add_evaluate_parser(sub)
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
