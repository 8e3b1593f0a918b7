"""One reconstructed face (`FaceResult`) and its files.

`FaceResult.save(out_dir, stem)` writes, next to each other and named `<stem>_face<i>...`:

| output key  | file                        | content |
| ----------- | --------------------------- | ------- |
| `obj`       | `<stem>_face0.obj`          | mesh with vertex colours (`v x y z r g b`), model space, model units |
| `ply`       | `<stem>_face0.ply`          | the same mesh, binary PLY with vertex colours |
| `npz`       | `<stem>_face0.npz`          | coefficients (`id exp tex angle gamma trans`) + `lm68` |
| `mat`       | `<stem>_face0.mat`          | the same with Deep3DFaceRecon's key names |
| `landmarks` | `<stem>_face0_lm68.txt`     | 68 landmarks (iBUG order) in original-image pixels, `x y` per line |
| `pose`      | `<stem>_face0.json`         | head pose (yaw, pitch, roll degrees) and everything else about the face |
| `overlay`   | `<stem>_face0_overlay.png`  | the render over the photo, at the photo's resolution |
| `depth`     | `<stem>_face0_depth.png`    | 16-bit camera depth at the photo's resolution: mm x 10, 0 = no face |
| `texture`   | `<stem>_face0_texture.png`  | RGBA photo colours in the model's UV layout (alpha 0 = not seen) |

Landmark coordinates in `.txt`, `.npz` and `.mat` files are 0-based pixel indices (the centre of the
top-left pixel is (0, 0)), the convention of dlib, OpenCV and Deep3DFaceRecon; the landmark files
`msma-jax prepare-data` reads beside photos use it too, so a `.txt` can be fed back. In Python,
`FaceResult.landmarks` follows the project convention (centres at +0.5).

The mesh is the reconstructed shape with its expression in the face model's own frame (y up, face
toward +z, unposed; mm for the embedded model); `pose_deg` and `coefficients.trans` in the JSON
place it in the camera frame. Vertex colours are the shaded albedo as rendered over the photo.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from data_pipelines.alignment import AlignTransform
from msma_jax.face_model import Coefficients
from msma_jax.inference.export import save_coefficients, save_mesh

OUTPUTS = ("obj", "ply", "npz", "mat", "landmarks", "pose", "overlay", "depth", "texture")
DEFAULT_OUTPUTS = ("obj", "ply", "npz", "mat", "landmarks", "pose", "overlay")
SUFFIXES = {"obj": ".obj", "ply": ".ply", "npz": ".npz", "mat": ".mat", "landmarks": "_lm68.txt",
            "pose": ".json", "overlay": "_overlay.png", "depth": "_depth.png",
            "texture": "_texture.png"}


def parse_outputs(spec: str | Sequence[str] | None) -> tuple[str, ...]:
  """'obj,ply,overlay' / a list / 'all' / 'default' / None (default) -> output keys in OUTPUTS order.

  Also accepted: 'mesh' (obj + ply), 'coefficients' (npz + mat), 'json' (= pose), 'txt' (= landmarks).
  """
  if spec is None:
    return DEFAULT_OUTPUTS
  items = spec.split(",") if isinstance(spec, str) else list(spec)
  aliases = {"all": OUTPUTS, "default": DEFAULT_OUTPUTS, "mesh": ("obj", "ply"),
             "coefficients": ("npz", "mat"), "json": ("pose",), "txt": ("landmarks",),
             "lm68": ("landmarks",), "uv": ("texture",)}
  chosen: set[str] = set()
  for item in (i.strip().lower() for i in items):
    if not item:
      continue
    if item in aliases:
      chosen.update(aliases[item])
    elif item in OUTPUTS:
      chosen.add(item)
    else:
      raise ValueError(f"--save: unknown output {item!r} (choose from {', '.join(OUTPUTS)}, "
                       "mesh, coefficients, default, all)")
  if not chosen:
    raise ValueError("--save: no output selected")
  return tuple(k for k in OUTPUTS if k in chosen)


def write_landmarks_txt(path: str | os.PathLike, landmarks: np.ndarray) -> pathlib.Path:
  """[68, 2] project-convention landmarks -> `x y` lines in 0-based pixel indices."""
  path = pathlib.Path(path)
  lm = np.asarray(landmarks, np.float64).reshape(-1, 2) - 0.5
  path.write_text("".join(f"{x:.3f} {y:.3f}\n" for x, y in lm))
  return path


def _write_png(path: pathlib.Path, rgb: np.ndarray) -> pathlib.Path:
  a = np.ascontiguousarray(rgb)
  if a.ndim == 3 and a.shape[-1] == 3:
    a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
  elif a.ndim == 3 and a.shape[-1] == 4:
    a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA)
  if not cv2.imwrite(str(path), a):
    raise OSError(f"{path}: could not write the image")
  return path


@dataclasses.dataclass
class FaceResult:
  """One face reconstructed from one picture.

  source: the input's name; face_index: 0 = largest face of the picture; image_size: (H, W) of the
  picture; coefficients: unbatched `Coefficients` (the face model's sizes); landmarks [68, 2]: the
  model's projected landmarks in picture pixels (project convention: pixel centres at +0.5);
  input_landmarks [68, 2]: the detector's (or landmark file's) points the face was aligned with;
  transform: picture -> crop alignment (`AlignTransform`, crop of `transform.size` px);
  crop: uint8 RGB [S, S, 3] aligned crop; vertices [V, 3]: unposed shape with expression, model
  units; colours [V, 3]: shaded vertex colours in [0, 1]; origin: where the input landmarks came
  from ("detector", "file", ...); score: detector score; fit: test-time fitting's step counts,
  per-face final loss terms ({} without fitting), landmark NME to the input points and quality
  flag (`reconstruct.fit_quality`); faces_found: faces found in the picture before selection.
  """
  source: str
  face_index: int
  image_size: tuple[int, int]
  coefficients: Coefficients
  landmarks: np.ndarray
  input_landmarks: np.ndarray
  transform: AlignTransform
  crop: np.ndarray = dataclasses.field(repr=False)
  vertices: np.ndarray = dataclasses.field(repr=False)
  colours: np.ndarray = dataclasses.field(repr=False)
  origin: str = "detector"
  score: float = float("nan")
  fit: dict = dataclasses.field(default_factory=dict)
  faces_found: int = 1
  photo: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
  views: Any = dataclasses.field(default=None, repr=False)      # msma_jax.inference.views.Views

  # ---- derived -----------------------------------------------------------------------------------
  @property
  def pose(self) -> np.ndarray:
    """[3] head pose (yaw, pitch, roll) in degrees: yaw > 0 turns the face toward the image's
    right, pitch > 0 tilts it down, roll > 0 turns it counter-clockwise on the image."""
    a = np.degrees(np.asarray(self.coefficients.angle, np.float64))
    return np.array([a[1], a[0], a[2]])

  @property
  def triangles(self) -> np.ndarray:
    return np.asarray(self._views().face_model.triangles)

  def _views(self):
    if self.views is None:
      raise ValueError(f"{self.source}: this FaceResult has no renderer attached (views=None)")
    return self.views

  def _photo(self) -> np.ndarray:
    if self.photo is None:
      raise ValueError(f"{self.source}: this FaceResult keeps no photo (photo=None)")
    return self.photo

  def overlay(self, opacity: float = 1.0) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the render composited over the photo at its original resolution."""
    return self._views().overlay(self._photo(), self.coefficients, self.transform, opacity)

  def depth_map(self) -> np.ndarray:
    """float32 [H, W] camera depth in model units at the photo's resolution (0 where no face)."""
    return self._views().depth_map(self.coefficients, self.transform, self.image_size)

  def texture(self, size: int = 512) -> np.ndarray:
    """uint8 RGBA [size, size, 4] photo colours in the model's UV layout (see `Views.texture`)."""
    return self._views().texture(self._photo(), self.coefficients, self.transform, size)

  def render_views(self, yaws_deg=(-50.0, 0.0, 50.0), size: int = 256) -> np.ndarray:
    """[N, S, S, 3] float renders of the reconstruction turned to each yaw (degrees)."""
    return self._views().render_views(self.coefficients, yaws_deg, size)

  def info(self) -> dict:
    """JSON-ready description: pose, alignment, detection, fitting, face model."""
    yaw, pitch, roll = (float(v) for v in self.pose)
    fm = self.views.face_model if self.views is not None else None
    return {
        "source": self.source, "face_index": self.face_index,
        "image_size": {"height": int(self.image_size[0]), "width": int(self.image_size[1])},
        "pose_deg": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "translation": [float(v) for v in np.asarray(self.coefficients.trans)],
        "face_model": None if fm is None else {"name": fm.name, "unit": fm.unit,
                                                "vertices": int(fm.n_vertices),
                                                "triangles": int(fm.n_triangles)},
        "alignment": {"crop_size": int(self.transform.size),
                      "scale": float(self.transform.scales[0]),
                      "scale_y": float(self.transform.scales[1]),
                      "translation": [float(v) for v in self.transform.translation],
                      "resample": self.transform.resample,
                      "note": "crop x = scale * image x + translation[0], crop y = scale_y * image "
                              "y + translation[1]"},
        "landmarks": {"origin": self.origin,
                      "detector_score": None if not np.isfinite(self.score) else float(self.score),
                      "faces_found_in_picture": int(self.faces_found),
                      "mean_distance_to_input_px": float(np.linalg.norm(
                          self.landmarks - self.input_landmarks, axis=-1).mean())},
        "fit": {k: (float(v) if isinstance(v, (np.floating, np.ndarray)) else v)
                for k, v in self.fit.items()},
    }

  # ---- files -------------------------------------------------------------------------------------
  def paths(self, out_dir: str | os.PathLike, stem: str,
            outputs: Sequence[str] | str | None = None) -> dict[str, pathlib.Path]:
    """{output key: path} of the files `save` writes."""
    base = pathlib.Path(out_dir) / f"{stem}_face{self.face_index}"
    return {k: base.parent / (base.name + SUFFIXES[k]) for k in parse_outputs(outputs)}

  def save(self, out_dir: str | os.PathLike, stem: str,
           outputs: Sequence[str] | str | None = None, *,
           texture_size: int = 512) -> dict[str, pathlib.Path]:
    """Writes the selected outputs (see the module docstring; default `DEFAULT_OUTPUTS`) and returns
    {output key: path}. `stem` may contain sub-folders; folders are created."""
    paths = self.paths(out_dir, stem, outputs)
    if not paths:
      return {}
    next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    lm0 = (np.asarray(self.landmarks, np.float64) - 0.5).astype(np.float32)   # 0-based indices
    for key, path in paths.items():
      if key in ("obj", "ply"):
        save_mesh(path, self.vertices, self.triangles, self.colours)
      elif key in ("npz", "mat"):
        save_coefficients(path, self.coefficients, lm68=lm0)
      elif key == "landmarks":
        write_landmarks_txt(path, self.landmarks)
      elif key == "pose":
        info = self.info()
        info["files"] = {k: p.name for k, p in paths.items()}
        path.write_text(json.dumps(info, indent=2) + "\n")
      elif key == "overlay":
        _write_png(path, self.overlay())
      elif key == "depth":
        fm = self._views().face_model
        depth_mm = self.depth_map().astype(np.float64) * fm.unit_in_mm
        _write_png(path, np.clip(np.round(depth_mm * 10.0), 0, 65535).astype(np.uint16))
      elif key == "texture":
        _write_png(path, self.texture(texture_size))
    return paths
