"""The `msma-jax` command line: `build_parser()` declares every subcommand (each sets `func`),
`main()` runs one and turns input errors into one line and exit status 2."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from configs.data import get_data_config
from msma_jax.inference.tracking import DEFAULT_MAX_GAP, DEFAULT_SMOOTH_SIGMA
from msma_jax.cli_checks import (EXIT_SIGINT, EXIT_USAGE, Interrupted, OneLineParser, check_args,
                                 on_sigterm)

# An error nobody anticipated: one line too, but a status of its own (set MSMA_JAX_TRACEBACK=1 for
# the traceback) so that it is not mistaken for a rejected input (2) or a failed batch item (1).
EXIT_INTERNAL = 3


def _cmd_info(args) -> int:
  import importlib.metadata as md
  import platform

  import jax

  from msma_jax import __version__
  from msma_jax.face_model import available_face_models, face_model_license, load_face_model
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
    print(f"  {name:12s} {fm.n_vertices} vertices, {fm.n_triangles} triangles, unit {fm.unit}; "
          f"coefficients id {s.id} / exp {s.exp} / tex {s.tex} (total {s.total})")
    print(f"  {'':12s} licence: {face_model_license(name)}")
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
  import shutil

  from data_pipelines import tfds_builders
  out = pathlib.Path(args.out)

  def make_builder():
    if args.synthetic:
      from data_pipelines.synthetic import SyntheticOptions
      return tfds_builders.MsmaSyntheticFaces(
          num_examples=args.synthetic, seed=args.seed, face_model=args.face_model,
          options=SyntheticOptions(max_yaw_deg=args.max_yaw, max_pitch_deg=args.max_pitch,
                                   max_roll_deg=args.max_roll),
          image_format=args.image_format, jpeg_quality=args.jpeg_quality,
          progress=not args.no_progress, data_dir=str(out))
    # SOURCE was checked by cli_checks (a folder; the sheet not inside it).
    return tfds_builders.MsmaFaceImages(
        source_dir=args.source, layout=args.layout, detector=args.detector,
        max_faces=args.max_faces if args.max_faces > 0 else None, min_side=args.min_side,
        upsample=args.upsample, use_landmark_files=not args.ignore_landmark_files,
        image_format=args.image_format, jpeg_quality=args.jpeg_quality,
        num_workers=args.workers, progress=not args.no_progress, data_dir=str(out))

  builder = make_builder()
  previous = None
  if args.overwrite and pathlib.Path(builder.data_dir).exists():
    # Set aside, not deleted: a failed or interrupted rebuild puts it back (nothing lost). TFDS
    # reads an existing dataset's info when a builder is made, so it is made again without it.
    previous = pathlib.Path(f"{builder.data_dir}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    pathlib.Path(builder.data_dir).rename(previous)
    builder = make_builder()
  if not args.synthetic and not args.overwrite and pathlib.Path(builder.data_dir).exists():
    print(f"{builder.data_dir} already exists; reusing it (--overwrite rebuilds)")
  try:
    path = tfds_builders.build(builder, overwrite=args.overwrite)
  except BaseException as e:
    if previous is not None:
      shutil.rmtree(builder.data_dir, ignore_errors=True)
      previous.rename(builder.data_dir)
    if isinstance(e, (KeyboardInterrupt, Interrupted)):
      _write_interrupted_summary(out, builder.summary)
    raise
  finally:
    s = builder.summary
    if s.images:
      print(s.format())
      for m in s.messages[: args.show_skipped]:
        print(f"  skipped: {m}")
      if len(s.messages) > args.show_skipped:
        print(f"  ... {len(s.messages) - args.show_skipped} more (all in "
              f"{tfds_builders.SUMMARY_FILE} beside the records)")
  if previous is not None:
    shutil.rmtree(previous, ignore_errors=True)
  source = tfds_builders.load_prepared(path)
  print(f"wrote {len(source)} records to {path}")
  if args.contact_sheet:
    from data_pipelines.contact_sheet import write_contact_sheet
    if len(source):
      sheet = write_contact_sheet(source, args.contact_sheet, count=args.sheet_count,
                                  columns=args.sheet_columns)
      print(f"wrote contact sheet {sheet}")
  skipped = builder.summary.num_skipped
  if skipped > args.max_failures:
    print(f"msma-jax prepare-data: {skipped} of {builder.summary.images} photos skipped "
          f"(more than --max-failures {args.max_failures})", file=sys.stderr)
    return 1
  return 0


def _write_interrupted_summary(out, summary) -> None:
  """An interrupted build writes no dataset (TFDS keeps a dataset only when complete); what it had
  read is kept in OUT/prepare_summary.json, marked interrupted."""
  import json

  from data_pipelines.tfds_builders import SUMMARY_FILE
  out.mkdir(parents=True, exist_ok=True)
  (out / SUMMARY_FILE).write_text(json.dumps({**summary.to_dict(), "interrupted": True,
                                              "dataset": None}, indent=2) + "\n")


def _cmd_train(args) -> int:
  from msma_jax.train.main import run_train
  return run_train(args.train_args)


def _cmd_sweep(args) -> int:
  from msma_jax.train.sweep import run_sweep
  return run_sweep(args.sweep, dry_run=args.dry_run, extra=args.overrides, seeds=args.seeds,
                   reference=args.reference, equal_time=args.equal_time,
                   summarise_only=args.summarise)
def _cmd_reconstruct(args) -> int:
  """Pictures / folders / globs / videos -> per-face meshes, coefficients, landmarks, pose, overlays."""
  from msma_jax.inference.batch import run_reconstruct
  upsample = args.upsample if args.upsample == "auto" else int(args.upsample)
  encoder_args = dict(weights=args.weights, align=args.align,
                      standard_landmarks=args.standard_landmarks, normals=args.normals)
  if args.tracks:
    from msma_jax.inference.video import run_video_tracks
    summary = run_video_tracks(
        args.inputs, args.out, outputs=args.save, every=args.every, smooth=args.smooth,
        max_gap=args.max_gap, progress=not args.no_progress, checkpoint=args.checkpoint,
        face_model=args.face_model, fit_steps=args.fit_steps, landmark_steps=args.landmark_steps,
        fit_size=args.fit_size, batch_size=args.batch_size, detector=args.detector,
        upsample=upsample, select=args.select,
        max_faces=args.max_faces if args.max_faces > 0 else None, min_score=args.min_score,
        which=args.which, device=args.device, use_landmark_files=not args.ignore_landmark_files,
        **encoder_args)
    print(summary.format())
    print(f"wrote {args.out}/summary.json")
    return 1 if summary.num_failed > args.max_failures else 0
  summary = run_reconstruct(
      args.inputs, args.out, outputs=args.save, every=args.every, texture_size=args.texture_size,
      sheet=args.sheet, sheet_count=args.sheet_count, progress=not args.no_progress, checkpoint=args.checkpoint, face_model=args.face_model,
      fit_steps=args.fit_steps, landmark_steps=args.landmark_steps, fit_size=args.fit_size,
      batch_size=args.batch_size, detector=args.detector, upsample=upsample, select=args.select,
      max_faces=args.max_faces if args.max_faces > 0 else None, min_score=args.min_score,
      which=args.which,
      device=args.device, use_landmark_files=not args.ignore_landmark_files, **encoder_args)
  print(summary.format())
  print(f"wrote {args.out}/summary.json" + (f" and {args.sheet}" if args.sheet and summary.faces
                                              else ""))
  return 1 if summary.num_failed > args.max_failures else 0


def _add_reconstruct_parser(sub) -> None:
  p = sub.add_parser(
      "reconstruct", help="3D faces from photos, folders, globs or videos",
      description="Detects every face (dlib; or reads .pts/.txt landmark files beside photos), "
      "aligns it, predicts its coefficients with a trained encoder (--checkpoint) or starts from "
      "the mean face, optionally fits them to the photo (--fit-steps), and writes per face: "
      "mesh (.obj with vertex colours, .ply), coefficients (.npz, .mat), 68 landmarks in photo "
      "pixels (_lm68.txt), pose and details (.json), overlay PNG at the photo's resolution; "
      "optionally a depth map and a UV texture. Unusable inputs are reported in one line each "
      "and skipped. Exit status: 0 all done, 1 more inputs failed than --max-failures, 2 a bad "
      "argument or a fatal error, 130/143 interrupted (Ctrl-C/SIGTERM; summary.json says so).")
  p.add_argument("inputs", nargs="+", metavar="INPUT",
                 help="image files, folders (recursive), glob patterns ('photos/*.jpg') or videos")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--checkpoint", help="training run / checkpoint folder of the encoder (default: "
                 "none, fit from the mean face)")
  p.add_argument("--which", default="best", choices=["best", "latest"],
                 help="which checkpoint of a run (default: %(default)s, falls back to latest)")
  p.add_argument("--weights", metavar="KIND:PATH",
                 help="instead of --checkpoint, another project's trained encoder: "
                 "deep3d:epoch_20.pth (Deep3DFaceRecon's net_recon; needs --face-model "
                 "BFM_model_front.mat; see docs/DEEP3D.md)")
  p.add_argument("--align", default="auto", choices=["auto", "standard", "deep3d"],
                 help="face crops: standard (onto the face model's mean face), deep3d "
                 "(Deep3DFaceRecon's align_img; reads similarity_Lm3D_all.mat from the BFM folder) "
                 "or auto (default: deep3d with --weights deep3d:..., else standard)")
  p.add_argument("--standard-landmarks", metavar="PATH",
                 help="--align deep3d: similarity_Lm3D_all.mat or its folder (default: the "
                 "--face-model file's folder)")
  p.add_argument("--normals", default="auto", choices=["auto", "area", "point_buf"],
                 help="vertex normals: auto (default: Deep3DFaceRecon's point_buf normals for "
                 "face models that carry one, i.e. BFM files; area-weighted otherwise)")
  p.add_argument("--face-model", default="embedded", help="'embedded' or a face model file")
  p.add_argument("--fit-steps", type=int, default=None, metavar="N",
                 help="test-time fitting steps with the training losses (default: 0 with "
                 "--checkpoint, 100 without)")
  p.add_argument("--landmark-steps", type=int, default=None, metavar="N",
                 help="landmark-only warm-up steps before fitting (cheap; default 300 when fitting "
                 "or without --checkpoint, else 0)")
  p.add_argument("--fit-size", type=int, default=224, help="crop size fitting renders at (px)")
  p.add_argument("--save", default="default",
                 help="comma-separated outputs: obj, ply, npz, mat, landmarks, pose, overlay, depth, "
                 "texture; or mesh, coefficients, default (all but depth and texture), all")
  p.add_argument("--texture-size", type=int, default=512, help="UV texture side (px)")
  p.add_argument("--sheet", metavar="PNG", help="also write a contact sheet: photo, overlay, "
                 "landmarks and three views of each face")
  p.add_argument("--sheet-count", type=int, default=16, help="faces on the sheet (the first N)")
  p.add_argument("--every", type=int, default=1, metavar="K", help="videos: every K-th frame")
  p.add_argument("--tracks", action="store_true",
                 help="videos / folders of frames: track faces across frames, one identity and "
                 "albedo per person, smoothed pose and expression; writes OUT/<video>/track<k>/ "
                 "(per-frame meshes and JSON, pose_smoothed.csv, mean_shape.obj) and summary.json")
  p.add_argument("--smooth", type=float, default=DEFAULT_SMOOTH_SIGMA, metavar="SIGMA",
                 help="--tracks: temporal smoothing, Gaussian sigma in processed frames (0 = off; "
                 "default %(default)s)")
  p.add_argument("--max-gap", type=int, default=DEFAULT_MAX_GAP, metavar="N",
                 help="--tracks: frames a track may miss before it ends (default %(default)s)")
  p.add_argument("--batch-size", type=int, default=8, help="faces per batch")
  p.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None,
                 help="JAX device (default: JAX's default backend)")
  p.add_argument("--detector", default="cascade", choices=["cascade", "hog", "cnn"],
                 help="cascade (default): dlib HOG, then its CNN, then HOG on rotated copies, each "
                 "only where the ones before found nothing; hog: fast, frontal; cnn: ~50x slower "
                 "on a CPU (docs/BENCHMARKS.md, 'Face detection')")
  p.add_argument("--upsample", default="auto", choices=["auto", "0", "1", "2"],
                 help="dlib upsampling; auto: 0, then 1 if no face is found (default)")
  p.add_argument("--select", default="all", choices=["all", "largest", "central"],
                 help="which faces of a picture are reconstructed when several are found: all "
                 "(default, largest first), the largest, or the one nearest the centre; a line "
                 "says when faces were left out")
  p.add_argument("--max-faces", type=int, default=0, help="faces per picture after --select, "
                 "largest first (0 = all)")
  p.add_argument("--min-score", type=float, default=0.3,
                 help="ignore detections scoring lower (default: %(default)s; dlib's own threshold "
                 "is 0)")
  p.add_argument("--ignore-landmark-files", action="store_true",
                 help="detect even where a .pts/.txt landmark file is beside a photo")
  p.add_argument("--max-failures", type=int, default=0, metavar="N",
                 help="exit status 1 only when more than N inputs failed (default: %(default)s)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.set_defaults(func=_cmd_reconstruct)


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
      for r in out["rows"]:   # a setting without subjects has no numbers (not NaN)
        print(f"{r['setting']:20s} " + (f"{r['mean_rmse_mm']:.2f} ± {r['std_mm']:.2f} mm "
                                        f"({r['subjects']} subjects)" if r["subjects"]
                                        else "no subjects"))
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
      for r in out["rows"]:   # a yaw bin without images has no numbers (not NaN)
        print(f"{r['bin']:24s} " + (f"NME 2D {r['nme_2d_percent']:.2f} %  3D "
                                    f"{r['nme_3d_percent']:.2f} % ({r['images']} images)"
                                    if r["images"] else "no images"))
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
  parser = OneLineParser(
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

  p = sub.add_parser(
      "train", help="train the encoder (render-and-compare); see msma_jax/train/main.py",
      description="msma-jax train --config configs/quickstart.py --workdir runs/quickstart "
      "[--config.section.key=value ...] [--resume | --noresume]", add_help=False)
  p.add_argument("train_args", nargs=argparse.REMAINDER)
  p.set_defaults(func=_cmd_train)

  p = sub.add_parser(
      "sweep", help="run a W&B grid-sweep definition locally (configs/sweeps/*.yaml)",
      description="Runs every grid point of a `wandb sweep` YAML with msma-jax train, one after "
      "another, in one W&B group; finished points are skipped; a failed point is reported and the "
      "rest still run. Writes sweep_summary.md/.csv/.png (mean ± sd over seeds, the difference to "
      "--reference with a 95 %% interval, steps/s, wall time) and sweep_runs.csv next to the runs. "
      "Train flags for every run may follow `--` "
      "(msma-jax sweep S.yaml --seeds 3 -- --config.train.num_steps=100).")
  p.add_argument("sweep", help="sweep YAML (configs/sweeps/ablations.yaml)")
  p.add_argument("--seeds", type=int, default=None, metavar="N",
                 help="run every point with config.seed = 0..N-1 (replaces config.seed values)")
  p.add_argument("--reference", default=None, metavar="PARAM=VALUE,...",
                 help="the point the others are compared with, e.g. "
                 "model.fusion.enabled=true,model.attention.kind=mlka (other swept params: "
                 "compared within the same value)")
  p.add_argument("--equal-time", action="store_true",
                 help="also run every non-reference point for the reference's wall time (its "
                 "steps scaled by the measured steps/s); needs --reference")
  p.add_argument("--summarise", action="store_true",
                 help="train nothing: summarise the finished points (the others are listed)")
  p.add_argument("--dry-run", action="store_true", help="print the runs without starting them")
  p.set_defaults(overrides=[])
  p.set_defaults(func=_cmd_sweep)

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
      "--synthetic N faces (msma_synthetic_faces). Unusable photos are skipped and counted. Exit "
      "status: 0 done, 1 more photos skipped than --max-failures, 2 a bad argument or no usable "
      "face, 130/143 interrupted (no dataset written; an --overwrite keeps the previous one).")
  p.add_argument("source", nargs="?", help="folder of photos (recursive: jpg, png, bmp, webp)")
  p.add_argument("--out", required=True, help="TFDS data dir; the dataset goes to OUT/<name>/<ver>")
  # Defaults: configs/data.py's `prepare` and `synthetic` sections (the one home of defaults).
  prep, synth = get_data_config().prepare, get_data_config().synthetic
  p.add_argument("--layout", default=prep.layout, choices=["folder", "300w_lp", "aflw2000_3d"])
  p.add_argument("--detector", default=prep.detector, choices=["hog", "cnn", "cascade"],
                 help="dlib detector (default: %(default)s; see reconstruct --help)")
  p.add_argument("--max-faces", type=int, default=prep.max_faces,
                 help="faces per photo, largest first (0 = all)")
  p.add_argument("--min-side", type=int, default=prep.min_side,
                 help="skip photos with a smaller shorter side")
  p.add_argument("--upsample", type=int, default=prep.upsample,
                 help="dlib upsampling (finds smaller faces)")
  p.add_argument("--ignore-landmark-files", action="store_true",
                 help="detect even where a .pts/.txt landmark file is present")
  p.add_argument("--workers", type=int, default=prep.num_workers,
                 help="detection processes (0 = inline)")
  p.add_argument("--synthetic", type=int, default=0, metavar="N", help="render N synthetic faces")
  p.add_argument("--seed", type=int, default=synth.seed, help="synthetic faces: random seed")
  p.add_argument("--face-model", default="embedded", help="synthetic faces: face model")
  p.add_argument("--max-yaw", type=float, default=synth.max_yaw_deg, help="synthetic faces: degrees")
  p.add_argument("--max-pitch", type=float, default=synth.max_pitch_deg,
                 help="synthetic faces: degrees")
  p.add_argument("--max-roll", type=float, default=synth.max_roll_deg,
                 help="synthetic faces: degrees")
  p.add_argument("--image-format", default=prep.image_format, choices=["jpeg", "png"])
  p.add_argument("--jpeg-quality", type=int, default=prep.jpeg_quality)
  p.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  p.add_argument("--contact-sheet", metavar="PNG", help="also write a contact sheet of the crops")
  p.add_argument("--sheet-count", type=int, default=16)
  p.add_argument("--sheet-columns", type=int, default=4)
  p.add_argument("--show-skipped", type=int, default=20, help="skip messages printed")
  p.add_argument("--max-failures", type=int, default=0, metavar="N",
                 help="exit status 1 only when more than N photos were skipped (default: "
                 "%(default)s)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_cmd_prepare_data)
  _add_evaluate_parser(sub)
  _add_reconstruct_parser(sub)
  return parser


# What an interrupted run leaves behind (one line; `{out}` is its --out).
_KEPT_WHEN_INTERRUPTED = {
    "reconstruct": "the files of finished pictures are kept; {out}/summary.json says interrupted",
    "prepare-data": "no dataset written (TFDS keeps only a complete one; an --overwrite keeps "
                    "the previous one); {out}/prepare_summary.json has the counts so far, marked "
                    "interrupted",
    "evaluate": "no report written",
}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = build_parser()
  if argv[:1] == ["train"]:
    # Everything after `train` belongs to the training flags (absl + ml_collections config flags);
    # argparse would try to interpret the --config.* overrides itself.
    args = argparse.Namespace(command="train", train_args=argv[1:], func=_cmd_train)
  elif argv[:1] == ["sweep"] and "--" in argv:
    cut = argv.index("--")               # train flags for every run follow `--`
    args = parser.parse_args(argv[:cut])
    args.overrides = argv[cut + 1:]
  else:
    args = parser.parse_args(argv)
  if not getattr(args, "func", None):
    parser.print_help()
    return 0
  # face_recognition_models imports pkg_resources, which warns on every run; not actionable here.
  warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
  on_sigterm()
  if args.command != "train":   # Orbax's absl warnings (metadata files it does not need) are noise
    logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    check_args(args)
    return args.func(args)
  except ValueError as e:   # UsageError, ConfigError, FaceModelError, DatasetError, InputError, ...
    return _fail(args.command, str(e))
  except OSError as e:      # a folder that cannot be made, a disk that is full, ...
    where = f"{e.filename}: " if e.filename else ""
    return _fail(args.command, f"{where}{e.strerror or e}")
  except (KeyboardInterrupt, Interrupted) as e:
    status = e.exit_status if isinstance(e, Interrupted) else EXIT_SIGINT
    name = "SIGTERM" if status != EXIT_SIGINT else "Ctrl-C"
    kept = _KEPT_WHEN_INTERRUPTED.get(args.command, "").format(out=getattr(args, "out", ""))
    print(f"msma-jax {args.command}: interrupted ({name})" + (f"; {kept}" if kept else ""),
          file=sys.stderr)
    return status
  except Exception as e:    # a bug, not an input: still one line unless asked for the traceback
    if os.environ.get("MSMA_JAX_TRACEBACK"):
      raise
    return _fail(args.command, f"internal error ({type(e).__name__}: {e}); set "
                 "MSMA_JAX_TRACEBACK=1 for the traceback", EXIT_INTERNAL)


def _fail(command: str, message: str, status: int = EXIT_USAGE) -> int:
  """Prints `msma-jax COMMAND: error: MESSAGE` as one line (inner newlines joined) on stderr."""
  text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
  print(f"msma-jax {command}: error: {text}", file=sys.stderr)
  return status


if __name__ == "__main__":
  sys.exit(main())
