"""Reading meshes and landmark annotations for the scan-based protocols; averaging a video's shapes.

Meshes (.obj, .ply, and anything else trimesh reads) load with their vertex order kept (no merging,
no splitting at texture seams), so a reconstruction keeps the face model's topology and landmark
vertex indices. Every failure is one `MeshError` line naming the file.
"""
from __future__ import annotations

import json
import pathlib
import xml.etree.ElementTree as ET
from typing import NamedTuple, Sequence

import numpy as np

from msma_jax.evaluation.alignment import fit_similarity

MESH_SUFFIXES = (".obj", ".ply")


class MeshError(ValueError):
  """A mesh or annotation file that is missing, unreadable or of the wrong shape."""


class Mesh(NamedTuple):
  """vertices [V, 3] float64 (file units), triangles [F, 3] int64 (F may be 0 for a point cloud)."""
  vertices: np.ndarray
  triangles: np.ndarray

  def same_topology(self, other: "Mesh") -> bool:
    return (self.vertices.shape == other.vertices.shape
            and np.array_equal(self.triangles, other.triangles))


def load_mesh(path) -> Mesh:
  """Reads one mesh file, keeping the vertex order (textures and materials are not read)."""
  import trimesh
  path = pathlib.Path(path)
  if not path.is_file():
    raise MeshError(f"{path}: mesh file not found")
  try:
    m = trimesh.load(path, process=False, maintain_order=True, skip_materials=True, force="mesh")
  except Exception as e:                                    # trimesh raises many types
    raise MeshError(f"{path}: unreadable mesh ({type(e).__name__}: {e})") from e
  v = np.asarray(getattr(m, "vertices", np.zeros((0, 3))), np.float64)
  f = np.asarray(getattr(m, "faces", np.zeros((0, 3))), np.int64).reshape(-1, 3)
  if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
    raise MeshError(f"{path}: no vertices (got {v.shape})")
  if not np.all(np.isfinite(v)):
    raise MeshError(f"{path}: vertices contain NaN or Inf")
  return Mesh(v, f)


def mesh_files(folder) -> list[pathlib.Path]:
  """The .obj/.ply files of a folder, sorted by name."""
  folder = pathlib.Path(folder)
  return sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES and p.is_file())


def average_shapes(meshes: Sequence[Mesh]) -> Mesh:
  """Mean shape of meshes with one topology: each is rigidly aligned (least squares over all
  vertices) to the first before averaging, so per-frame exports may be posed or canonical."""
  ref = meshes[0].vertices
  acc = np.zeros_like(ref)
  for m in meshes:
    acc += fit_similarity(m.vertices, ref, scale=False).apply(m.vertices)
  return Mesh(acc / len(meshes), meshes[0].triangles)


def load_ljson(path) -> np.ndarray:
  """Landmarks [K, 3] (or [K, 2]) from a menpo LJSON file ({"landmarks": {"points": [...]}}, v2;
  null entries (unannotated points) become NaN)."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text())
    points = data["landmarks"]["points"]
    arr = np.array([[np.nan] * 3 if p is None else p for p in points], np.float64)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise MeshError(f"{path}: not a menpo LJSON landmark file ({type(e).__name__}: {e})") from e
  if arr.ndim != 2 or arr.shape[1] not in (2, 3):
    raise MeshError(f"{path}: landmark points must be [K, 3], got {arr.shape}")
  return arr


def load_pp(path) -> np.ndarray:
  """Landmarks [K, 3] from a MeshLab PickedPoints (.pp) file, in file order (NoW's scan landmarks)."""
  path = pathlib.Path(path)
  try:
    root = ET.parse(path).getroot()
    pts = [[float(p.attrib[a]) for a in ("x", "y", "z")] for p in root.iter("point")]
  except (OSError, ET.ParseError, KeyError, ValueError) as e:
    raise MeshError(f"{path}: not a MeshLab picked-points file ({type(e).__name__}: {e})") from e
  if not pts:
    raise MeshError(f"{path}: no <point> entries")
  return np.asarray(pts, np.float64)


def load_landmarks_array(path) -> np.ndarray:
  """Landmarks [K, 3] from .npy or whitespace-separated .txt (NoW's predicted landmarks)."""
  path = pathlib.Path(path)
  try:
    arr = np.load(path) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=2)
  except (OSError, ValueError) as e:
    raise MeshError(f"{path}: unreadable landmark file ({type(e).__name__}: {e})") from e
  arr = np.asarray(arr, np.float64)
  if arr.ndim != 2 or arr.shape[1] != 3 or not np.all(np.isfinite(arr)):
    raise MeshError(f"{path}: landmarks must be finite [K, 3], got {arr.shape}")
  return arr


def crop_sphere(points, centre, radius) -> np.ndarray:
  """[V] bool: points [V, 3] within `radius` of centre [3] (same units)."""
  return np.linalg.norm(np.asarray(points) - np.asarray(centre), axis=1) <= radius
