"""Triangle rasterization in pure JAX: exact z-buffer visibility, then differentiable barycentrics.

The rasterizer is split the way differentiable renderers are (diffren, nvdiffrast):

1. `visibility` (no gradients): which triangle is nearest at every pixel centre. Every triangle
   enumerates the pixel centres of its screen bounding box; fragments are reduced per pixel by two
   scatter-min passes (depth, then the lowest triangle id among fragments at that depth), so
   visibility is exact and deterministic. Memory and work grow with B·(F + covered pixels), never
   with B·F·H·W.
2. `barycentrics` (differentiable): for the triangle found at each pixel, perspective-correct
   barycentrics and depth are recomputed from the clip-space vertices, so gradients reach the
   vertices through anything interpolated with them.

Capacities. Triangles are sorted into levels by bounding-box size (1, 2, 4, ... pixels on a side up
to the image size); a level enumerates K×K candidate pixels per triangle and is processed in chunks
inside a `while_loop` until all of its triangles are done (chunks of at most `chunk_fragments`
fragments; on the CPU about as many as the mesh has triangles, see `_visibility_one`). No capacity
can overflow: a triangle of any size lands in some level and every chunk of every level is processed.

Geometry. Tests use homogeneous (2D-homogeneous / Olano-Greer) edge functions on clip-space (x, y, w),
which are valid for vertices behind the camera, so triangles crossing the near plane are rasterized
exactly where they are in front of it (per-pixel near/far test on NDC depth) without splitting
them; their bounding boxes come from the triangle clipped against the near plane. To keep float32
accurate for small distant triangles, each vertex's homogeneous pixel coordinates are taken
relative to a nearby pixel centre and scaled to unit length (a positive per-vertex scale, undone
exactly afterwards).

Conventions (DESIGN.md): clip space is OpenGL's; NDC y = +1 is the top row; pixel (x, y) has its
centre at (x + 0.5, y + 0.5); front faces are counter-clockwise in NDC.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import PartitionSpec as P

BACKGROUND = -1
_INT_MAX = jnp.iinfo(jnp.int32).max
# Fragments enumerated per chunk of a level (per image); bounds the memory of one loop iteration.
DEFAULT_CHUNK_FRAGMENTS = 1 << 17
# On the CPU, the fewest fragments a chunk of a level enumerates (see `_visibility_one`).
MIN_CHUNK_FRAGMENTS = 1 << 12
BatchMode = Literal["auto", "map", "vmap"]
# Choices that depend on the backend. "auto" takes the CPU form on the CPU backend and the
# accelerator form elsewhere; naming a form runs it on any backend (tests compare the two on the CPU).
BATCH_MODES = ("auto", "map", "vmap")
CHUNK_SIZINGS = ("auto", "mesh", "fixed")     # CPU form: "mesh"; accelerator form: "fixed"
MATERIALIZE_MODES = ("auto", "loop", "barrier")   # CPU form: "loop"; accelerator form: "barrier"
# Pixel-centre slack when turning a float bounding box into candidate pixels (a candidate too many
# is harmless: the edge test rejects it).
_BBOX_EPS = 1e-3


@struct.dataclass
class Fragments:
  """Per-pixel rasterization result for a batch of images.

  triangle_id: [B, H, W] int32, index into `triangles`, -1 where no triangle covers the pixel centre.
  barycentric: [B, H, W, 3] float32 perspective-correct barycentrics (0 on background).
  depth:       [B, H, W] float32 window depth (z_ndc + 1) / 2 in [0, 1] (1 on background), the value
               the z-test compares (OpenGL's depth buffer).
  """
  triangle_id: jax.Array
  barycentric: jax.Array
  depth: jax.Array

  @property
  def mask(self) -> jax.Array:
    """[B, H, W] bool coverage."""
    return self.triangle_id >= 0


def on_cpu() -> bool:
  """Whether "auto" choices take their CPU form (decided when a function is traced)."""
  return jax.default_backend() == "cpu"


def resolve_form(choice: str, allowed, cpu_form: str, accelerator_form: str) -> str:
  """`choice` from `allowed`; "auto" -> `cpu_form` on the CPU backend, else `accelerator_form`."""
  if choice not in allowed:
    raise ValueError(f"unknown choice {choice!r} (known: {', '.join(allowed)})")
  if choice != "auto":
    return choice
  return cpu_form if on_cpu() else accelerator_form


@dataclasses.dataclass(frozen=True)
class RenderForms:
  """How the renderer runs: the forms chosen per backend, all selectable (config.render).

  batch_mode: "auto" | "map" | "vmap" (`over_batch`; the rasterizer's visibility pass loops on the
    CPU, the per-pixel stages always vmap under "auto").
  chunk_sizing: "auto" | "mesh" | "fixed": fragments per loop iteration of a rasterizer level,
    about the triangle count (at least `min_chunk_fragments`, at most `chunk_fragments`) or always
    `chunk_fragments` (see `_visibility_one`).
  chunk_fragments: candidate pixels per chunk and image (memory bound of one iteration).
  min_chunk_fragments: the fewest a chunk enumerates under "mesh" sizing (None: the module's
    MIN_CHUNK_FRAGMENTS, read at trace time).
  materialize: "auto" | "loop" | "barrier", how `materialize` stops fusion.
  """
  batch_mode: str = "auto"
  chunk_sizing: str = "auto"
  chunk_fragments: int = DEFAULT_CHUNK_FRAGMENTS
  min_chunk_fragments: int | None = None
  materialize: str = "auto"

  def __post_init__(self):
    for value, allowed in ((self.batch_mode, BATCH_MODES), (self.chunk_sizing, CHUNK_SIZINGS),
                           (self.materialize, MATERIALIZE_MODES)):
      if value not in allowed:
        raise ValueError(f"RenderForms: unknown choice {value!r} (known: {', '.join(allowed)})")
    if self.chunk_fragments < 1 or (self.min_chunk_fragments or 1) < 1:
      raise ValueError(f"RenderForms: chunk sizes must be positive, got {self.chunk_fragments}, "
                       f"{self.min_chunk_fragments}")

  @classmethod
  def from_config(cls, cfg) -> "RenderForms":
    """From a `config.render` section (configs/render.py holds the defaults)."""
    return cls(batch_mode=cfg.batch_mode, chunk_sizing=cfg.chunk_sizing,
               chunk_fragments=int(cfg.chunk_fragments),
               min_chunk_fragments=int(cfg.min_chunk_fragments), materialize=cfg.materialize)


class _Setup(NamedTuple):
  """Per-triangle rasterization data (one image)."""
  ints: jax.Array     # [F, 4] int32: bounding-box corner pixel (x0, y0), candidate counts (nx, ny)
  planes: jax.Array   # [F, 12] float32: edge planes λ_i(dx, dy) = planes[3i:3i+3]·(dx, dy, 1)
                      # (inside iff all ≥ 0) and the window-depth plane planes[9:12]·(dx, dy, 1)


# The geometry below is written on per-component arrays ("structure of arrays": one array per vertex
# and coordinate) rather than on [..., 3, 4] stacks: XLA's CPU backend vectorises it over the large
# leading axes, which measured 5x faster per pixel than the stacked form.

def _gather_vertices(clip: jax.Array, vertex_ids) -> list[tuple[jax.Array, ...]]:
  """clip [V, 4], vertex_ids: 3 index arrays of any shape -> per vertex (x, y, z, w) arrays."""
  ct = clip.T
  return [tuple(ct[k][vid] for k in range(4)) for vid in vertex_ids]


def _pixel_homogeneous(verts, image_size, ox, oy):
  """Homogeneous pixel coordinates of the 3 vertices relative to the pixel centre (ox + .5, oy + .5).

  verts: per vertex (x, y, z, w) clip arrays; ox, oy: pixel indices broadcastable to them.
  Returns per vertex (X·w, Y·w, w) with X right, Y down, relative to that centre.
  """
  h, w = image_size
  cx = jnp.asarray(ox, jnp.float32) + 0.5
  cy = jnp.asarray(oy, jnp.float32) + 0.5
  return [((x + ww) * (w / 2) - cx * ww, (ww - y) * (h / 2) - cy * ww, ww)
          for x, y, _, ww in verts]


def _window_z(verts):
  """(z + w) / 2 per vertex: divided by w it is window depth (z_ndc + 1) / 2, computed without the
  cancellation of forming z_ndc ≈ -1 first (depth keeps full relative precision near the near plane).
  """
  return [0.5 * (z + ww) for _, _, z, ww in verts]


def _edge_planes(hom, q):
  """Edge functions of a triangle from homogeneous pixel coordinates relative to a pixel centre.

  hom: per vertex (X, Y, W) from `_pixel_homogeneous`; q: per vertex the clip-space quantity whose
  perspective-divided value is wanted (`_window_z` gives window depth).
  Returns (lam, zplane, det, scale): for a pixel centre at offset (dx, dy) from the reference,
  λ_i = (lam[i][0]·dx + lam[i][1]·dy + lam[i][2]) / scale[i] are the homogeneous barycentrics
  (Σ λ_i w_i = 1; perspective-correct barycentrics are λ / Σλ) and q / w at the pixel is
  zplane[0]·dx + zplane[1]·dy + zplane[2]. `lam` is divided by the determinant, so the inside test
  is all(λ ≥ 0) for either winding; det < 0 means counter-clockwise in NDC (pixel y points down).
  Each vertex is scaled to unit length first (a positive scale, undone through `scale`), which keeps
  float32 accurate for small, distant triangles.
  """
  scale = [jnp.sqrt(x * x + y * y + w * w + 1e-30) for x, y, w in hom]  # +1e-30: finite gradient
  u = [(x / s, y / s, w / s) for (x, y, w), s in zip(hom, scale)]

  def cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])

  e = [cross(u[1], u[2]), cross(u[2], u[0]), cross(u[0], u[1])]
  det = u[0][0] * e[0][0] + u[0][1] * e[0][1] + u[0][2] * e[0][2]
  inv = 1.0 / jnp.where(det != 0, det, 1.0)
  lam = [tuple(c * inv for c in ei) for ei in e]
  qs = [qi / si for qi, si in zip(q, scale)]
  zplane = tuple(sum(qs[i] * lam[i][k] for i in range(3)) for k in range(3))
  return lam, zplane, det, scale


def _clipped_bbox(verts, image_size):
  """Pixel bounding box of each triangle clipped against the near plane (z_ndc >= -1).

  verts: per vertex (x, y, z, w) arrays [F]. Returns (x0, y0, nx, ny) int32 [F]: first candidate
  pixel centre and candidate counts inside the image (0 when behind the near plane or off-screen).
  """
  h, w = image_size
  d = [z + ww for _, _, z, ww in verts]                                 # >= 0: in front of near
  points = []
  for i in range(3):
    j = (i + 1) % 3
    points.append((verts[i], d[i] >= 0))
    den = d[i] - d[j]
    t = d[i] / jnp.where(den != 0, den, 1.0)
    cut = tuple(a + t * (b - a) for a, b in zip(verts[i], verts[j]))   # edge ∩ near plane
    points.append((cut, (d[i] >= 0) != (d[j] >= 0)))
  big = jnp.float32(1e9)
  xmin = ymin = big
  xmax = ymax = -big
  any_ok = False
  for (x, y, _, ww), ok in points:
    ok = ok & (ww > 0)
    r = 1.0 / jnp.where(ok, ww, 1.0)
    px = (x * r + 1.0) * (w / 2)
    py = (1.0 - y * r) * (h / 2)
    xmin, xmax = jnp.minimum(xmin, jnp.where(ok, px, big)), jnp.maximum(xmax, jnp.where(ok, px, -big))
    ymin, ymax = jnp.minimum(ymin, jnp.where(ok, py, big)), jnp.maximum(ymax, jnp.where(ok, py, -big))
    any_ok = any_ok | ok
  finite = any_ok & jnp.isfinite(xmin) & jnp.isfinite(xmax) & jnp.isfinite(ymin) & jnp.isfinite(ymax)
  x0 = jnp.ceil(jnp.clip(xmin, -1.0, w + 1.0) - 0.5 - _BBOX_EPS).astype(jnp.int32)
  x1 = jnp.floor(jnp.clip(xmax, -1.0, w + 1.0) - 0.5 + _BBOX_EPS).astype(jnp.int32)
  y0 = jnp.ceil(jnp.clip(ymin, -1.0, h + 1.0) - 0.5 - _BBOX_EPS).astype(jnp.int32)
  y1 = jnp.floor(jnp.clip(ymax, -1.0, h + 1.0) - 0.5 + _BBOX_EPS).astype(jnp.int32)
  x0, y0 = jnp.maximum(x0, 0), jnp.maximum(y0, 0)
  x1, y1 = jnp.minimum(x1, w - 1), jnp.minimum(y1, h - 1)
  nx = jnp.where(finite, jnp.maximum(x1 - x0 + 1, 0), 0)
  ny = jnp.where(finite, jnp.maximum(y1 - y0 + 1, 0), 0)
  return x0, y0, nx, ny


def _setup(clip: jax.Array, triangles: jax.Array, image_size, cull_backfaces: bool) -> _Setup:
  verts = _gather_vertices(clip, [triangles[:, i] for i in range(3)])
  x0, y0, nx, ny = _clipped_bbox(verts, image_size)
  hom = _pixel_homogeneous(verts, image_size, x0, y0)
  lam, zplane, det, _ = _edge_planes(hom, _window_z(verts))
  flat = [c for li in lam for c in li] + list(zplane)
  good = det != 0
  for c in flat:
    good &= jnp.isfinite(c)
  if cull_backfaces:
    good &= det < 0                                                   # front-facing (see above)
  nx, ny = jnp.where(good, nx, 0), jnp.where(good, ny, 0)
  return _Setup(jnp.stack([x0, y0, nx, ny], -1), jnp.stack(flat, -1))


def _levels(image_size) -> list[int]:
  """Candidate window sizes: 1, 2, 4, ... up to the first power of two covering the image."""
  ks, k = [1], 1
  while k < max(image_size):
    k *= 2
    ks.append(k)
  return ks


def _fragments(setup: _Setup, tri_idx: jax.Array, valid: jax.Array, k: int, image_size):
  """Fragments of a chunk of triangles with K×K candidate windows.

  Returns (pixel [M·K²] int32 flat index or H·W for rejected, depth [M·K²], tri [M·K²]).
  """
  h, w = image_size
  dy, dx = jnp.divmod(jnp.arange(k * k, dtype=jnp.int32), k)
  ints = setup.ints[tri_idx]                                          # [M, 4]
  pl = setup.planes[tri_idx]                                          # [M, 12]
  fdx, fdy = dx.astype(jnp.float32), dy.astype(jnp.float32)
  plane = lambda j: pl[:, j, None] * fdx + pl[:, j + 1, None] * fdy + pl[:, j + 2, None]
  z = plane(9)                                                        # [M, K²]
  inside = ((plane(0) >= 0) & (plane(3) >= 0) & (plane(6) >= 0) & (z >= 0.0) & (z <= 1.0)
            & (dx < ints[:, 2, None]) & (dy < ints[:, 3, None]) & valid[:, None])
  pix = (ints[:, 1, None] + dy) * w + ints[:, 0, None] + dx
  pix = jnp.where(inside, pix, h * w)
  tri = jnp.broadcast_to(tri_idx[:, None], pix.shape)
  return pix.reshape(-1), z.reshape(-1), tri.reshape(-1)


def _level_fragments(n_tri: int, chunk_sizing: str, chunk_fragments: int,
                     min_chunk_fragments: int) -> int:
  """Fragments one chunk of a level enumerates (per image), see `_visibility_one`."""
  if resolve_form(chunk_sizing, CHUNK_SIZINGS, "mesh", "fixed") == "mesh":
    return min(chunk_fragments, max(n_tri, min_chunk_fragments))
  return chunk_fragments


def _visibility_one(clip, triangles, image_size, cull_backfaces, chunk_fragments,
                    chunk_sizing="auto", min_chunk_fragments=None):
  """[V, 4] clip -> [H·W] int32 nearest triangle id per pixel (-1 background), one image."""
  h, w = image_size
  n_tri = triangles.shape[0]
  setup = _setup(clip, triangles, image_size, cull_backfaces)
  ks = _levels(image_size)
  size = jnp.maximum(setup.ints[:, 2], setup.ints[:, 3])             # [F]
  active = size > 0
  # Level = number of window sizes smaller than the box (the first K with K >= size).
  level = jnp.sum(size[:, None] > jnp.asarray(ks, jnp.int32)[None, :], axis=1, dtype=jnp.int32)
  level = jnp.where(active, level, len(ks))                           # inactive: past the last
  # Counting sort of triangles by level: order[start[L]:start[L] + count[L]] are level L's triangles.
  onehot = level[:, None] == jnp.arange(len(ks) + 1, dtype=jnp.int32)
  count = jnp.sum(onehot, axis=0, dtype=jnp.int32)
  start = jnp.cumsum(count) - count
  rank = jnp.sum(jnp.where(onehot, jnp.cumsum(onehot, axis=0, dtype=jnp.int32) - 1, 0), axis=1)
  order = jnp.zeros((n_tri,), jnp.int32).at[start[level] + rank].set(
      jnp.arange(n_tri, dtype=jnp.int32))

  # A chunk costs its padded size however few of its slots hold triangles, and most triangles of a
  # face mesh are in the smallest levels. On the CPU ("mesh" sizing) a chunk of every level
  # therefore enumerates about as many fragments as the mesh has triangles (at least
  # min_chunk_fragments, at most chunk_fragments), so a nearly empty level of large windows costs
  # what the level of 1-pixel boxes does: the embedded face's visibility at 64², batch 16,
  # 43 -> 23 ms (bench_render.py). Elsewhere every loop iteration launches kernels, so chunks stay
  # at chunk_fragments ("fixed"). Module-level MIN_CHUNK_FRAGMENTS is read here, not bound as a
  # default, so bench_render.py --min-chunk-fragments can override it.
  level_fragments = _level_fragments(
      n_tri, chunk_sizing, chunk_fragments,
      MIN_CHUNK_FRAGMENTS if min_chunk_fragments is None else min_chunk_fragments)

  def run_levels(init, reduce_fn):
    buf = init
    for li, k in enumerate(ks):
      m = max(1, min(n_tri, level_fragments // (k * k)))
      padded = jnp.concatenate([order, jnp.zeros((m,), jnp.int32)])
      n_chunks = (count[li] + m - 1) // m

      def body(c, buf, li=li, k=k, m=m, padded=padded):
        pos = c * m + jnp.arange(m, dtype=jnp.int32)
        idx = jax.lax.dynamic_slice(padded, (start[li] + c * m,), (m,))
        valid = pos < count[li]
        return reduce_fn(buf, *_fragments(setup, idx, valid, k, image_size))

      buf = jax.lax.fori_loop(0, n_chunks, body, buf)
    return buf

  zbuf = run_levels(jnp.full((h * w,), jnp.inf, jnp.float32),
                    lambda zb, pix, z, tri: zb.at[pix].min(z, mode="drop"))

  def id_reduce(ib, pix, z, tri):
    at_front = z == zbuf.at[pix].get(mode="fill", fill_value=jnp.nan)
    return ib.at[pix].min(jnp.where(at_front, tri, _INT_MAX), mode="drop")

  ids = run_levels(jnp.full((h * w,), _INT_MAX, jnp.int32), id_reduce)
  return jnp.where(ids == _INT_MAX, BACKGROUND, ids)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def materialize(tree, mode: str = "auto"):
  """Identity that makes XLA compute `tree` into memory once instead of fusing it into consumers.

  XLA fuses cheap elementwise producers into every consumer and recomputes them per element read;
  a consumer that reads a value at several offsets and for several channels then recomputes a long
  chain many times. The CPU backend drops `lax.optimization_barrier` before fusion, so on the CPU
  ("loop") the value is passed through a while loop whose trip count (always 1) is known only at
  run time, which no fusion crosses. Other backends get the barrier ("barrier"). mode: "auto" |
  "loop" | "barrier". Gradients pass through unchanged.
  """
  if resolve_form(mode, MATERIALIZE_MODES, "loop", "barrier") == "barrier":
    return jax.lax.optimization_barrier(tree)
  first = jax.tree.leaves(tree)[0].ravel()[:1]
  trips = 1 + jnp.sum(jnp.isnan(first), dtype=jnp.int32)            # 1 (2 for a leading NaN)
  zeros = jax.tree.map(jnp.zeros_like, tree)
  return jax.lax.while_loop(lambda c: c[0] < trips, lambda c: (c[0] + 1, tree),
                            (jnp.int32(0), zeros))[1]


@materialize.defjvp
def _materialize_jvp(mode, primals, tangents):
  return materialize(primals[0], mode), tangents[0]


def over_batch(fn, *args, batch_mode: BatchMode = "auto", batch_axes=None, cpu_mode="map"):
  """Applies a per-image function over the leading batch axis of `args`.

  "vmap" computes all images at once (best on GPU/TPU); "map" loops over images with `lax.map`
  (best on CPUs for visibility: one image's per-triangle intermediates stay in cache — measured 4x
  faster than vmap for 8 images of 108k triangles); "auto" picks `cpu_mode` on the CPU backend and
  "vmap" elsewhere. The per-pixel stages (barycentrics, interpolation, antialiasing) pass
  cpu_mode="vmap": they have no per-triangle intermediates, and the backward pass of a `lax.map`
  (a reverse scan with stacked residuals) measured 3-4x slower than the vmapped one.

  Sharded batches run under `shard_map`, so every device rasterizes its own images with no
  communication. The batch's mesh axes come from `batch_axes` (e.g. ("data", "fsdp"); needs the
  mesh set with `jax.set_mesh`, as the train step does) or, with explicit sharding, from the type of
  the first argument (a jit with `NamedSharding(mesh, P("data"))` inputs).
  """
  if batch_mode not in BATCH_MODES:
    raise ValueError(f"batch_mode must be 'auto', 'map' or 'vmap', got {batch_mode!r}")
  batch_mode = resolve_form(batch_mode, BATCH_MODES, cpu_mode, "vmap")

  def local(*a):
    if batch_mode == "vmap":
      return jax.vmap(fn)(*a)
    return jax.lax.map(lambda x: fn(*x), a)

  mesh = jax.sharding.get_abstract_mesh()
  if batch_axes is not None:
    batch_axes = tuple(batch_axes) if not isinstance(batch_axes, str) else (batch_axes,)
    if mesh.empty:
      raise ValueError(f"batch_axes={batch_axes} needs the device mesh set with jax.set_mesh(mesh)")
    batch_axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    if not batch_axes:
      return local(*args)
  else:
    sharding = getattr(jax.typeof(args[0]), "sharding", None)
    spec = getattr(sharding, "spec", None)
    batch_axes = spec[0] if spec else None
    if batch_axes is None:
      return local(*args)
    if mesh.empty:
      mesh = sharding.mesh
  in_specs = tuple(P(batch_axes) for _ in args)
  # check_vma=False: loop carries start as device-invariant constants (empty z-buffers) and become
  # per-device values; every device computes only on its own images, so nothing needs checking.
  return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(batch_axes),
                       check_vma=False)(*args)


def visibility(clip_vertices: jax.Array, triangles: jax.Array, image_size: tuple[int, int], *,
               cull_backfaces: bool = False, chunk_fragments: int = DEFAULT_CHUNK_FRAGMENTS,
               batch_mode: BatchMode = "auto", batch_axes=None, chunk_sizing: str = "auto",
               min_chunk_fragments: int | None = None) -> jax.Array:
  """Nearest triangle per pixel centre, without gradients.

  clip_vertices [B, V, 4], triangles [F, 3] int -> triangle_id [B, H, W] int32 (-1 background).
  chunk_sizing / min_chunk_fragments: see `RenderForms` (None: MIN_CHUNK_FRAGMENTS).
  """
  h, w = image_size
  clip = jax.lax.stop_gradient(clip_vertices).astype(jnp.float32)
  fn = lambda c: _visibility_one(c, triangles.astype(jnp.int32), (h, w), cull_backfaces,
                                 chunk_fragments, chunk_sizing, min_chunk_fragments)
  return over_batch(fn, clip, batch_mode=batch_mode, batch_axes=batch_axes).reshape(
      clip.shape[0], h, w)


def barycentrics(clip_vertices: jax.Array, triangles: jax.Array, triangle_id: jax.Array,
                 image_size: tuple[int, int], *, batch_mode: BatchMode = "auto",
                 batch_axes=None) -> tuple[jax.Array, jax.Array]:
  """Differentiable perspective-correct barycentrics and window depth of the given triangles.

  clip_vertices [B, V, 4], triangles [F, 3], triangle_id [B, H, W] -> (barycentric [B, H, W, 3],
  depth [B, H, W] in [0, 1]); background pixels get zeros / 1.
  """
  fn = lambda c, i: _barycentrics_one(c, triangles, i, image_size)
  return over_batch(fn, clip_vertices, triangle_id, batch_mode=batch_mode,
                    batch_axes=batch_axes, cpu_mode="vmap")


def _edge_values(hom):
  """Unnormalised homogeneous edge functions at the reference pixel centre of `hom`.

  hom: per vertex (X, Y, W) from `_pixel_homogeneous`. Returns per edge i (opposite vertex i) the
  coefficients (a, b, c) of E_i(dx, dy) = a·dx + b·dy + c = (h_j × h_k)·(dx, dy, 1), which is
  proportional to λ_i / w_i with the same positive factor for all three edges of one triangle
  times the orientation's sign. Ratios of them (barycentrics, edge crossings) therefore need none of
  the normalisation `_edge_planes` does for its bounding-box-relative planes, and their gradients
  are a few multiply-adds per pixel.
  """
  return [_edge_function(hom[j], hom[k]) for j, k in ((1, 2), (2, 0), (0, 1))]


def _edge_function(hj, hk):
  """(a, b, c) of the edge from vertex j to vertex k: (h_j × h_k)·(dx, dy, 1) (see `_edge_values`)."""
  (xj, yj, wj), (xk, yk, wk) = hj, hk
  return yj * wk - wj * yk, wj * xk - xj * wk, xj * yk - yj * xk


def _barycentrics_one(clip_vertices, triangles, triangle_id, image_size):
  """One image: clip [V, 4], triangle_id [H, W] -> ([H, W, 3], [H, W]).

  At the pixel centre (the reference of `_pixel_homogeneous`) E_i = c_i; perspective-correct
  barycentrics are E_i / Σ E and window depth is Σ E_i q_i / Σ E_i w_i with q = (z + w) / 2.
  """
  h, w = image_size
  covered = triangle_id >= 0
  tri = triangles[jnp.maximum(triangle_id, 0)]                        # [H, W, 3]
  verts = _gather_vertices(clip_vertices, [tri[..., i] for i in range(3)])
  ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
  hom = _pixel_homogeneous(verts, image_size, xs, ys)
  e = [c for _, _, c in _edge_values(hom)]
  q = _window_z(verts)
  total = jnp.where(covered, e[0] + e[1] + e[2], 1.0)
  bary = jnp.stack([jnp.where(covered, ei / total, 0.0) for ei in e], -1)
  ew = e[0] * verts[0][3] + e[1] * verts[1][3] + e[2] * verts[2][3]
  depth = jnp.where(covered, (e[0] * q[0] + e[1] * q[1] + e[2] * q[2])
                    / jnp.where(covered, ew, 1.0), 1.0)
  return bary, depth


def rasterize(clip_vertices: jax.Array, triangles: jax.Array, image_size: tuple[int, int], *,
              cull_backfaces: bool = False, chunk_fragments: int = DEFAULT_CHUNK_FRAGMENTS,
              batch_mode: BatchMode = "auto", batch_axes=None, chunk_sizing: str = "auto",
              min_chunk_fragments: int | None = None) -> Fragments:
  """Rasterizes triangles given in clip space.

  clip_vertices: [B, V, 4] OpenGL clip coordinates (before the perspective divide).
  triangles: [F, 3] int vertex indices, counter-clockwise when front-facing.
  image_size: (H, W) in pixels.
  cull_backfaces: drop triangles that are clockwise in NDC (facing away from the camera).
  chunk_fragments: candidate pixels enumerated per loop iteration and image (memory bound).
  batch_mode: how images are batched ("auto": a loop on CPU, vmap on GPU/TPU; see `over_batch`).
  batch_axes: mesh axes the batch is sharded over (with `jax.set_mesh`), see `over_batch`.
  chunk_sizing / min_chunk_fragments: how chunks are sized per level (`RenderForms`).
  Returns `Fragments`; gradients flow into `barycentric` and `depth` (not into visibility).
  """
  if clip_vertices.ndim != 3 or clip_vertices.shape[-1] != 4:
    raise ValueError(f"rasterize: clip_vertices must be [B, V, 4], got {clip_vertices.shape}")
  if triangles.ndim != 2 or triangles.shape[-1] != 3:
    raise ValueError(f"rasterize: triangles must be [F, 3], got {triangles.shape}")
  h, w = (int(image_size[0]), int(image_size[1]))
  if h <= 0 or w <= 0:
    raise ValueError(f"rasterize: image_size must be positive (H, W), got {image_size}")
  b = clip_vertices.shape[0]
  if triangles.shape[0] == 0 or clip_vertices.shape[1] == 0:          # nothing to draw
    return Fragments(jnp.full((b, h, w), BACKGROUND, jnp.int32),
                     jnp.zeros((b, h, w, 3), clip_vertices.dtype),
                     jnp.ones((b, h, w), clip_vertices.dtype))
  ids = visibility(clip_vertices, triangles, (h, w), cull_backfaces=cull_backfaces,
                   chunk_fragments=chunk_fragments, batch_mode=batch_mode, batch_axes=batch_axes,
                   chunk_sizing=chunk_sizing, min_chunk_fragments=min_chunk_fragments)
  bary, depth = barycentrics(clip_vertices, triangles, ids, (h, w), batch_mode=batch_mode,
                             batch_axes=batch_axes)
  return Fragments(ids, bary, depth)
