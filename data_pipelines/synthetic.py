"""Synthetic training faces: random coefficients, framing like an aligned photo, random backgrounds.

A synthetic sample is rendered from the face model by `msma_jax.render.render_face` with known
coefficients, so it carries exact labels (coefficients, 68 landmarks). Faces are framed the way real
photos are aligned: the translation is solved so that the 5-point alignment of the rendered landmarks
(`data_pipelines.alignment`) is the identity, i.e. a synthetic image looks like an aligned real crop;
with `framing="detector"` it is moved and scaled the way dlib's landmarks would frame it instead
(`data_pipelines.detector_framing`), so training crops carry the framing noise photos have.

Sampling (defaults): identity and albedo N(0, 1) (x `tex_scale`), expression (blendshape models:
one or two expressions at random strengths; PCA models: N(0, 1) x `exp_scale`), pose uniform in
yaw +-60 deg, pitch +-20 deg, roll +-20 deg, lighting = ambient level, a random directional first-order
term, weak second-order terms and a slight colour tint (Deep3DFaceRecon's SH convention, 0.8 added
to the first band by the shader). Backgrounds: flat colour, linear gradient, smooth noise or clutter
of random shapes; photo-like options (`data_pipelines.photo_like`) add natural scenes, hair, neck and
shoulders, occluders and camera artefacts. `make_faces` runs the whole chain.
"""
from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from data_pipelines import photo_like
from data_pipelines.alignment import fit_alignment, reference_five_points
from data_pipelines.landmarks import five_points

FRAMINGS = ("true", "detector")
BACKGROUNDS = ("simple", "natural", "mixed")


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
  """Ranges of the synthetic distribution (angles in degrees, scales of N(0, 1) coefficients)."""
  max_yaw_deg: float = 60.0
  max_pitch_deg: float = 20.0
  max_roll_deg: float = 20.0
  id_scale: float = 1.0
  exp_scale: float = 1.0
  tex_scale: float = 1.0
  light_scale: float = 1.0
  jitter_px: float = 0.0        # uniform shift of the framing (pixels of a 224 crop) after alignment
  jitter_scale: float = 0.0     # random relative scale change of the framing
  # how the crop is framed: "true" (the alignment of the face's own landmark vertices) or
  # "detector" (as dlib's landmarks would frame it: `detector_framing`, calibrated per face model)
  framing: str = "true"
  # what the face is seen in (`photo_like`): "simple" (flat, gradient, noise, shapes), "natural"
  # (1/f-textured scenes) or "mixed" (half each)
  backgrounds: str = "simple"
  head: bool = False            # hair, neck and shoulders drawn behind the face
  occluder_prob: float = 0.0    # chance of an object in front of the face (it leaves the mask)
  camera_artefacts: bool = False  # blur, noise, white balance, gamma, JPEG


def sample_coefficients(face_model, rng: np.random.Generator, n: int,
                        options: SyntheticOptions = SyntheticOptions()) -> np.ndarray:
  """[n, total] flat coefficients (translation left at 0; see `frame_faces`)."""
  s = face_model.sizes
  sl = s.slices()
  c = np.zeros((n, s.total), np.float32)
  c[:, sl["id"]] = rng.normal(size=(n, s.id)) * options.id_scale
  c[:, sl["tex"]] = rng.normal(size=(n, s.tex)) * options.tex_scale
  if face_model.expression_names:           # blendshapes: 1 = the full expression
    exp = np.zeros((n, s.exp))
    for i in range(n):
      k = rng.integers(0, 3)                  # neutral, one or two expressions
      picks = rng.choice(s.exp, size=k, replace=False)
      exp[i, picks] = rng.uniform(0.2, 1.0, size=k)
    c[:, sl["exp"]] = exp * options.exp_scale
  else:
    c[:, sl["exp"]] = rng.normal(size=(n, s.exp)) * options.exp_scale
  limits = np.radians([options.max_pitch_deg, options.max_yaw_deg, options.max_roll_deg])
  c[:, sl["angle"]] = rng.uniform(-1, 1, size=(n, 3)) * limits
  gamma = np.zeros((n, 3, 9))
  ls = options.light_scale
  ambient = 0.075 + rng.uniform(-0.225, 0.225, size=(n, 1)) * ls   # [-0.15, 0.3] at light_scale 1
  tint = rng.normal(scale=0.04, size=(n, 3))
  gamma[:, :, 0] = ambient + tint * ls
  direction = rng.normal(size=(n, 1, 3)) * np.array([0.25, 0.2, 0.15]) * ls
  gamma[:, :, 1:4] = direction + rng.normal(scale=0.02, size=(n, 3, 3)) * ls
  gamma[:, :, 4:9] = rng.normal(scale=0.05, size=(n, 1, 5)) * ls
  c[:, sl["gamma"]] = gamma.reshape(n, 27)
  return c


def project_landmarks(face_model, flat: np.ndarray, camera) -> np.ndarray:
  """[n, total] flat coefficients -> [n, 68, 2] pixels (the landmarks `render_face` reports)."""
  import jax.numpy as jnp

  from msma_jax import camera as cam
  from msma_jax.face_model import Coefficients
  c = Coefficients.from_flat(jnp.asarray(flat, jnp.float32), face_model.sizes)
  lm3d = face_model.landmarks_3d(face_model.shape(c))
  world = cam.rigid_transform(lm3d, c.angle, c.trans)
  return np.asarray(cam.project(world, camera), np.float64)


def framing_offsets(rng: np.random.Generator, yaw: np.ndarray, options: SyntheticOptions,
                    size: int, noise=None) -> tuple[np.ndarray, np.ndarray]:
  """Where each synthetic crop puts its face relative to the aligned framing.

  yaw [n] radians. Returns (scale [n], shift [n, 2] crop pixels) for `frame_faces`: the uniform
  jitter of `options` (`jitter_px` in pixels of a 224 crop, scaled to `size`), composed with a
  draw from `noise` (`detector_framing.FramingNoise`: how a face detector frames faces), if given.
  """
  n = len(yaw)
  scale = np.ones(n)
  shift = np.zeros((n, 2))
  if options.jitter_px or options.jitter_scale:
    shift = rng.uniform(-1, 1, size=(n, 2)) * options.jitter_px * size / 224.0
    scale = 1 + rng.uniform(-1, 1, size=n) * options.jitter_scale
  if noise is not None:
    r, d = noise.sample(rng, yaw, size)
    scale, shift = scale * r, shift * r[:, None] + d
  return scale, shift


def frame_faces(face_model, flat: np.ndarray, camera, scale: np.ndarray | float = 1.0,
                shift: np.ndarray | None = None, iterations: int = 4) -> np.ndarray:
  """Sets the translation of [n, total] coefficients so each face is framed like an aligned photo.

  The face's 5 alignment points land on the reference points (`reference_five_points`) scaled by
  `scale` ([n] or scalar) about the crop centre and moved by `shift` ([n, 2] crop pixels): 1 and 0
  frame it exactly as the alignment of its true landmarks would. Iterates: project the landmarks,
  fit the 5-point alignment (scale s, shift t); move the face along the view axis to change its
  size by s and across it to shift its 5-point centroid by t. Returns a new [n, total] array.
  """
  flat = np.array(flat, np.float32)
  sl = face_model.sizes.slices()["trans"]
  size = camera.image_size[0]
  ref = reference_five_points(face_model, size)
  n = flat.shape[0]
  target_scale = np.broadcast_to(np.asarray(scale, np.float64), (n,))
  target_shift = np.zeros((n, 2)) if shift is None else np.asarray(shift, np.float64)
  centre = np.array(camera.principal)
  for _ in range(iterations):
    p5 = five_points(project_landmarks(face_model, flat, camera))
    for i in range(n):
      target = (ref - centre) * target_scale[i] + centre + target_shift[i]
      t = fit_alignment(p5[i], target, size)
      tr = flat[i, sl].astype(np.float64)
      depth = camera.distance - tr[2]
      new_depth = depth / t.scale
      # pixel shift of the 5-point centroid wanted after the depth change
      cur = (p5[i].mean(0) - centre) * t.scale + centre
      want = target.mean(0)
      dx, dy = (want - cur) * new_depth / camera.focal
      flat[i, sl] = [tr[0] + dx, tr[1] - dy, camera.distance - new_depth]
  return flat


def random_backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[n, size, size, 3] float32 RGB in [0, 1]: flat, gradient, smooth noise or shapes (uniformly)."""
  out = np.empty((n, size, size, 3), np.float32)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  for i in range(n):
    kind = rng.integers(0, 4)
    c0, c1 = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    if kind == 0:
      img = np.broadcast_to(c0, (size, size, 3))
    elif kind == 1:
      a = rng.uniform(0, 2 * np.pi)
      t = np.cos(a) * xx + np.sin(a) * yy
      t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
      img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    elif kind == 2:
      cells = int(rng.integers(3, 12))
      grid = rng.uniform(0, 1, size=(cells, cells, 3)).astype(np.float32)
      img = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    else:
      img = np.ascontiguousarray(np.broadcast_to(c0, (size, size, 3)), np.float32).copy()
      for _ in range(int(rng.integers(3, 15))):
        colour = rng.uniform(0, 1, size=3).tolist()
        cx, cy = rng.integers(0, size, size=2)
        if rng.random() < 0.5:
          ax = tuple(int(v) for v in rng.integers(size // 20, size // 3, size=2))
          cv2.ellipse(img, (int(cx), int(cy)), ax, float(rng.uniform(0, 180)), 0, 360, colour, -1,
                      cv2.LINE_AA)
        else:
          w, h = rng.integers(size // 20, size // 2, size=2)
          cv2.rectangle(img, (int(cx), int(cy)), (int(cx + w), int(cy + h)), colour, -1)
    out[i] = np.clip(img, 0, 1)
  return out


@functools.lru_cache(maxsize=4)
def _jitted_render(camera):
  import jax

  from msma_jax.face_model import Coefficients
  from msma_jax.render import render_face

  @jax.jit
  def render(face_model, flat, backgrounds):
    c = Coefficients.from_flat(flat, face_model.sizes)
    out = render_face(face_model, c, camera, background=backgrounds)
    return out.image, out.mask, out.landmarks_2d
  return render


def make_faces(face_model, rng: np.random.Generator, n: int, camera,
               options: SyntheticOptions = SyntheticOptions(), noise=None, scale: float = 1.0):
  """n synthetic training faces: sample, frame, render, dress as photos (per `options`).

  noise: the `FramingNoise` used when `options.framing == "detector"` (the caller loads it once,
  `detector_framing.load_calibration`). scale: the face's size relative to an aligned crop (< 1
  leaves more of the scene around it, like a photo before alignment). Returns (flat [n, total] coefficients, image [n, S, S, 3]
  float32 in [0, 1], mask [n, S, S] skin coverage, landmarks [n, 68, 2] pixels).
  """
  size = camera.image_size[0]
  flat = sample_coefficients(face_model, rng, n, options)
  yaw = flat[:, face_model.sizes.slices()["angle"]][:, 1]
  framing_scale, shift = framing_offsets(rng, yaw, options, size,
                                         noise if options.framing == "detector" else None)
  flat = frame_faces(face_model, flat, camera, framing_scale * scale, shift * scale)
  if options.backgrounds == "simple":
    bgs = random_backgrounds(rng, n, size)
  elif options.backgrounds == "natural":
    bgs = photo_like.natural_backgrounds(rng, n, size)
  else:
    pick = rng.random(n) < 0.5
    bgs = np.where(pick[:, None, None, None], photo_like.natural_backgrounds(rng, n, size),
                   random_backgrounds(rng, n, size))
  if not (options.head or options.occluder_prob or options.camera_artefacts):
    return (flat, *render_batch(face_model, flat, camera, bgs))
  # Rendered over black, the image is (face colour x coverage); anything can be put behind it.
  face, mask, landmarks = render_batch(face_model, flat, camera, np.zeros_like(bgs))
  mask = mask.copy()
  images = np.empty_like(face)
  for i in range(n):
    bg = bgs[i]
    if options.head:
      bg = photo_like.draw_head(bg, landmarks[i], photo_like.skin_colour(face[i], mask[i]), rng)
    img = np.clip(face[i] + (1.0 - mask[i][..., None]) * bg, 0, 1)
    if rng.random() < options.occluder_prob:
      img, mask[i] = photo_like.occlude(img, mask[i], landmarks[i], rng)
    if options.camera_artefacts:
      img = photo_like.camera_artefacts(img, rng)
    images[i] = img
  return flat, images, mask, landmarks


def render_batch(face_model, flat: np.ndarray, camera, backgrounds: np.ndarray):
  """Renders [n, total] coefficients over [n, H, W, 3] backgrounds with `render_face` (jitted).

  Returns (image [n, H, W, 3] float32 clipped to [0, 1], mask [n, H, W] coverage in [0, 1],
  landmarks [n, 68, 2] pixels).
  """
  import jax.numpy as jnp
  image, mask, landmarks = _jitted_render(camera)(
      face_model, jnp.asarray(flat, jnp.float32), jnp.asarray(backgrounds, jnp.float32))
  return (np.clip(np.asarray(image, np.float32), 0, 1), np.asarray(mask, np.float32),
          np.asarray(landmarks, np.float32))
