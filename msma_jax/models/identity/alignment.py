"""Differentiable face alignment for the identity networks: dlib's face chip and ArcFace's crop.

Both warp an image with a similarity transform fitted to landmarks and sample it bilinearly with JAX,
so gradients flow from the aligned crop back to every image pixel (and to the landmarks).

Coordinates: inputs follow the project convention (pixel (x, y) has its centre at (x + 0.5, y + 0.5),
x right, y down, iBUG-68 order, 0-based). dlib and OpenCV put pixel centres at integers, so the
landmarks are shifted by -0.5 before the reference formulas are applied.

`dlib_face_chip` reimplements dlib's `get_face_chip_details(shape, 150, 0.25)` +
`extract_image_chip` (dlib/image_transforms/interpolation.h): the mean-shape similarity fit, the chip
rectangle (with dlib's 150/149 corner-to-corner mapping), the 2x image pyramid (`pyramid_down<2>`, a
5x5 [1 4 6 4 1]^2/256 filter) that dlib samples from when the face is much larger than the chip, the
bounding-box crop that fixes the pyramid's pixel grid, and dlib's bilinear rule that a sample whose
2x2 neighbourhood leaves the image is black. Differences from dlib, by design: values stay floating
point (dlib truncates to uint8 after interpolation and after each pyramid level, so dlib's chip is at
most one grey level per level below ours), and the special case of a chip that is an exact unscaled,
unrotated copy (a plain pixel copy in dlib, the same values here via interpolation) is not singled
out.

`arcface_crop` is insightface's `norm_crop`: the 5 landmarks (eye centres, nose tip, mouth corners)
mapped onto insightface's published 112x112 reference points by a least-squares similarity, then an
inverse-mapped bilinear warp with zero border (what `cv2.warpAffine(..., borderValue=0)` does).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# dlib's mean face (x, y in [0, 1] of the unpadded chip) for iBUG points 17..67
# (get_face_chip_details); only the points dlib uses are kept below.
_DLIB_MEAN_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991,
    0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217,
    0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428,
    0.793132, 0.858516, 0.79751, 0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395,
    0.639268, 0.726104, 0.642159, 0.556721, 0.490127, 0.423532, 0.338094, 0.290379, 0.428096,
    0.490127, 0.552157, 0.689874, 0.553364, 0.490127, 0.42689)
_DLIB_MEAN_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345,
    0.587326, 0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852,
    0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388,
    0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746,
    0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182)
# dlib ignores the eyebrows (17-26) and the lower lip (55-59, 65-67).
DLIB_68_USED = np.asarray([i for i in range(17, 68)
                           if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])
DLIB_68_MEAN = np.stack([np.asarray(_DLIB_MEAN_X)[DLIB_68_USED - 17],
                         np.asarray(_DLIB_MEAN_Y)[DLIB_68_USED - 17]], -1)
# dlib's 5-point model (shape_predictor_5_face_landmarks): eye corners and the nose base.
DLIB_5_MEAN = np.asarray([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                          [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                          [0.4901123135679, 0.6277975316475]])
# insightface's reference points for a 112x112 crop: left eye, right eye (as seen in the image),
# nose tip, left and right mouth corner.
ARCFACE_REFERENCE_112 = np.asarray([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                    [41.5493, 92.3655], [70.7299, 92.2041]])
_PYRAMID_TAPS = np.asarray([1.0, 4.0, 6.0, 4.0, 1.0])


def similarity_fit(src: jax.Array, dst: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Least-squares similarity dst ~ A @ src + t (rotation, uniform scale, translation; no mirror).

  src, dst: [..., N, 2]. Returns A [..., 2, 2] (= s * R) and t [..., 2]. This is the closed form of
  Umeyama's estimate (what dlib's find_similarity_transform and skimage's SimilarityTransform
  compute): A = [[a, -b], [b, a]] with (a, b) the regression of the centred points as complex
  numbers.
  """
  ms, md = jnp.mean(src, -2, keepdims=True), jnp.mean(dst, -2, keepdims=True)
  s, d = src - ms, dst - md
  # Guarded so that degenerate landmarks (all equal, e.g. zero padding) give A = 0, not NaN.
  var = jnp.maximum(jnp.sum(s * s, axis=(-2, -1)), 1e-12)
  a = jnp.sum(s * d, axis=(-2, -1)) / var
  b = jnp.sum(s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0], axis=-1) / var
  A = jnp.stack([jnp.stack([a, -b], -1), jnp.stack([b, a], -1)], -2)
  t = md[..., 0, :] - jnp.einsum("...ij,...j->...i", A, ms[..., 0, :])
  return A, t


def _bilinear(image: jax.Array, x: jax.Array, y: jax.Array, valid_w, valid_h,
              all_or_nothing: bool) -> jax.Array:
  """Samples image [H, W, C] at float coordinates x, y [...] (pixel centres at integers).

  all_or_nothing (dlib): a sample is black unless its whole 2x2 neighbourhood lies in the first
  valid_h rows and valid_w columns. Otherwise (OpenCV's constant border): each neighbour outside
  the image counts as 0.
  """
  h, w = image.shape[:2]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)

  def tap(yy, xx):
    inside = (xx >= 0) & (yy >= 0) & (xx < valid_w) & (yy < valid_h)
    v = image[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
    return v if all_or_nothing else v * inside[..., None].astype(v.dtype)

  out = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
         + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
  if all_or_nothing:
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < valid_w) & (y0 + 1 < valid_h)
    out = out * ok[..., None].astype(out.dtype)
  return out


def _pyramid_down(image: jax.Array) -> jax.Array:
  """dlib's pyramid_down<2> without integer truncation: [H, W, C] -> [(H-3)//2, (W-3)//2, C].

  out[i, j] = sum_ab k_a k_b in[2i + a, 2j + b] / 256 with k = [1 4 6 4 1], done separably with
  strided slices (cheaper to compile than a depthwise convolution).
  """
  def along(x, axis):
    n = (x.shape[axis] - 3) // 2
    taps = [jax.lax.slice_in_dim(x, a, a + 2 * (n - 1) + 1, stride=2, axis=axis)
            for a in range(5)]
    return sum(float(k) * t for k, t in zip(_PYRAMID_TAPS, taps))
  return along(along(image, 1), 0) / 256.0


def _truncate(x: jax.Array) -> jax.Array:
  """dlib's conversion to uint8 (truncation) with a straight-through gradient.

  A value within 1e-4 below an integer counts as that integer: float32 interpolation of equal
  neighbours can land one ulp short of the value that dlib's double arithmetic reaches exactly.
  """
  return x + jax.lax.stop_gradient(jnp.floor(x + 1e-4) - x)


def _round_half_away(x):
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _static_pyramid_levels(h: int, w: int) -> int:
  """How many non-empty pyramid_down<2> levels an h x w image can have (dlib stops at <= 8 px)."""
  n = 0
  while h > 8 and w > 8:
    h, w, n = (h - 3) // 2, (w - 3) // 2, n + 1
  return n


def dlib_chip_points(landmarks: jax.Array, size: int = 150,
                     padding: float = 0.25) -> tuple[jax.Array, np.ndarray]:
  """The (image points [..., N, 2] in dlib coordinates, chip points [N, 2]) dlib fits.

  landmarks: [..., 68, 2] or [..., 5, 2] (dlib's 5-point model order), project pixel coordinates.
  """
  n = landmarks.shape[-2]
  if n == 68:
    img_pts, mean = landmarks[..., DLIB_68_USED, :], DLIB_68_MEAN
  elif n == 5:
    img_pts, mean = landmarks, DLIB_5_MEAN
  else:
    raise ValueError(f"landmarks: expected [..., 68, 2] (iBUG) or [..., 5, 2] (dlib 5-point), "
                     f"got shape {tuple(landmarks.shape)}")
  chip_pts = (padding + mean) / (2 * padding + 1) * size
  return img_pts - 0.5, chip_pts


def _dlib_chip_one(image: jax.Array, img_pts: jax.Array, chip_pts: np.ndarray, size: int,
                   n_levels: int, quantize: bool) -> jax.Array:
  """One [H, W, C] image -> [size, size, C] chip (see module docstring)."""
  h, w = image.shape[:2]
  f32 = jnp.float32
  A, t = similarity_fit(jnp.asarray(chip_pts, f32), img_pts.astype(f32))
  angle = jnp.arctan2(A[1, 0], A[0, 0])
  scale = jnp.hypot(A[0, 0], A[1, 0])
  centre = A @ jnp.asarray([size / 2.0, size / 2.0], f32) + t
  half = (size * scale - 1.0) / 2.0               # centered_drect(p, w, h): extent w - 1
  rot = jnp.stack([jnp.stack([jnp.cos(angle), -jnp.sin(angle)]),
                   jnp.stack([jnp.sin(angle), jnp.cos(angle)])])

  # Bounding box of the rotated rectangle, grown by the pyramid's border allowance.
  corners = centre + (jnp.asarray([[-1, -1], [1, -1], [1, 1], [-1, 1]], f32) * half) @ rot.T

  def area(lo, hi):                               # drectangle area (inclusive); 0 if empty
    ext = hi - lo + 1.0
    return jnp.where(jnp.all(hi >= lo), ext[0] * ext[1], 0.0)

  def down(p):                                    # pyramid_down<2>::point_down
    return p / 2.0 - jnp.asarray([1.25, 0.75], f32)

  lo, hi = centre - half, centre + half
  # dlib's depth: the number of levels k >= 1 with area(down^k(rect)) > size^2 (areas shrink with
  # k, so counting them equals dlib's while loop), capped at n_levels + 1 (deeper is all black).
  depth = jnp.int32(0)
  dlo, dhi = down(lo), down(hi)
  for _ in range(n_levels + 1):
    depth = depth + (area(dlo, dhi) > size * size).astype(jnp.int32)
    dlo, dhi = down(dlo), down(dhi)
  grow = 2.0 ** (depth.astype(f32) + 2.0) - 2.0   # 2, then grow * 2 + 2 per level
  box_lo = jnp.maximum(jnp.min(corners, 0) - grow, 0.0)
  box_hi = jnp.minimum(jnp.max(corners, 0) + grow, jnp.asarray([w - 1.0, h - 1.0], f32))
  box_lo, box_hi = _round_half_away(box_lo), _round_half_away(box_hi)
  box_w = (box_hi[0] - box_lo[0] + 1).astype(jnp.int32)
  box_h = (box_hi[1] - box_lo[1] + 1).astype(jnp.int32)
  box_x, box_y = box_lo[0].astype(jnp.int32), box_lo[1].astype(jnp.int32)

  # Move the box's top-left pixel to the origin: dlib builds the pyramid on this crop, so its
  # pixel grid (the parity of every downsampling) starts there.
  padded = jnp.pad(image, ((0, h), (0, w), (0, 0)))
  crop = jax.lax.dynamic_slice(padded, (jnp.clip(box_y, 0, h - 1), jnp.clip(box_x, 0, w - 1),
                                        0), image.shape)

  cols = jnp.arange(size, dtype=f32)
  cx, cy = jnp.meshgrid(cols, cols)               # chip pixel (x = column, y = row)

  def sample(img, rect_lo, rect_hi, vw, vh):
    # The chip -> level mapping from three corners (dlib's find_affine_transform): chip (0, 0) ->
    # rotated top-left, (size-1, 0) -> rotated top-right, (0, size-1) -> rotated bottom-left.
    mid = (rect_lo + rect_hi) / 2.0
    origin = mid + rot @ (rect_lo - mid)
    ex = rot @ jnp.stack([rect_hi[0] - rect_lo[0], 0.0]) / (size - 1)
    ey = rot @ jnp.stack([0.0, rect_hi[1] - rect_lo[1]]) / (size - 1)
    sx = origin[0] + cx * ex[0] + cy * ey[0]
    sy = origin[1] + cx * ex[1] + cy * ey[1]
    out = _bilinear(img, sx, sy, vw, vh, all_or_nothing=True)
    return _truncate(out) if quantize else out

  rect_lo, rect_hi = lo - box_lo, hi - box_lo
  direct = sample(crop, rect_lo, rect_hi, box_w, box_h)     # dlib's level -1: no pyramid
  if n_levels == 0:
    return jnp.where(depth == 0, direct, 0.0)
  # Pyramid levels 0 .. n_levels-1, each zero-padded into one [n_levels, h1, w1, C] stack so that a
  # single (data-dependent) level is sampled once.
  h1, w1 = (h - 3) // 2, (w - 3) // 2
  levels, sizes, rects = [], [], []
  img, vw, vh = crop, box_w, box_h
  for _ in range(n_levels):
    rect_lo, rect_hi = down(rect_lo), down(rect_hi)
    ok = (vw > 8) & (vh > 8)                      # dlib: images of <= 8 rows/columns -> empty
    vw, vh = jnp.where(ok, (vw - 3) // 2, 0), jnp.where(ok, (vh - 3) // 2, 0)
    img = _pyramid_down(img)
    img = _truncate(img) if quantize else img
    levels.append(jnp.pad(img, ((0, h1 - img.shape[0]), (0, w1 - img.shape[1]), (0, 0))))
    sizes.append(jnp.stack([vw, vh]))
    rects.append(jnp.stack([rect_lo, rect_hi]))
  level = jnp.clip(depth - 1, 0, n_levels - 1)
  vwh = jnp.stack(sizes)[level]
  vwh = jnp.where(depth > n_levels, 0, vwh)       # deeper than this image allows: empty in dlib
  rect = jnp.stack(rects)[level]
  pyramid = sample(jnp.stack(levels)[level], rect[0], rect[1], vwh[0], vwh[1])
  return jnp.where(depth == 0, direct, pyramid)


def dlib_face_chip(images: jax.Array, landmarks: jax.Array, size: int = 150,
                   padding: float = 0.25, quantize: bool = False) -> jax.Array:
  """dlib's aligned face chip: images [B, H, W, C], landmarks [B, 68|5, 2] (project pixel
  coordinates) -> chips [B, size, size, C] float32 in the images' value range.

  Matches `dlib.get_face_chip(img, shape, size, padding)` up to dlib's uint8 truncation; with
  quantize=True (images in 0..255) the truncation is applied too, as in dlib, after every pyramid
  level and after interpolation, with straight-through gradients.
  """
  if images.ndim != 4 or landmarks.ndim != 3 or landmarks.shape[0] != images.shape[0]:
    raise ValueError(f"dlib_face_chip: expected images [B, H, W, C] and landmarks [B, 68|5, 2], got "
                     f"{tuple(images.shape)} and {tuple(landmarks.shape)}")
  img_pts, chip_pts = dlib_chip_points(landmarks, size, padding)
  n_levels = _static_pyramid_levels(images.shape[1], images.shape[2])
  def one(image, pts):
    return _dlib_chip_one(image, pts, chip_pts, size, n_levels, quantize)
  return jax.vmap(one)(images.astype(jnp.float32), img_pts.astype(jnp.float32))


def five_points_from_68(landmarks: jax.Array) -> jax.Array:
  """[..., 68, 2] iBUG -> [..., 5, 2]: eye centres (36-41, 42-47), nose tip 30, mouth corners 48, 54."""
  return jnp.stack([jnp.mean(landmarks[..., 36:42, :], -2), jnp.mean(landmarks[..., 42:48, :], -2),
                    landmarks[..., 30, :], landmarks[..., 48, :], landmarks[..., 54, :]], -2)


def arcface_transform(landmarks: jax.Array, size: int = 112) -> jax.Array:
  """[..., 68|5, 2] project pixel coordinates -> [..., 2, 3] image-to-crop matrix (OpenCV pixel
  coordinates, the `M` insightface passes to cv2.warpAffine)."""
  pts = five_points_from_68(landmarks) if landmarks.shape[-2] == 68 else landmarks
  if pts.shape[-2] != 5:
    raise ValueError(f"landmarks: expected [..., 68, 2] or [..., 5, 2], got {tuple(landmarks.shape)}")
  ref = jnp.asarray(ARCFACE_REFERENCE_112 * (size / 112.0), jnp.float32)
  A, t = similarity_fit(pts.astype(jnp.float32) - 0.5, ref)
  return jnp.concatenate([A, t[..., None]], -1)


def warp_affine(images: jax.Array, matrices: jax.Array, size: int) -> jax.Array:
  """cv2.warpAffine(img, M, (size, size)) with bilinear sampling and zero border, in JAX.

  images [B, H, W, C], matrices [B, 2, 3] (source -> destination, pixel centres at integers)
  -> [B, size, size, C] float32.
  """
  def one(image, m):
    A, t = m[:, :2], m[:, 2]
    det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
    det = jnp.where(jnp.abs(det) < 1e-12, 1e-12, det)      # degenerate landmarks: finite, not NaN
    inv = jnp.stack([jnp.stack([A[1, 1], -A[0, 1]]), jnp.stack([-A[1, 0], A[0, 0]])]) / det
    g = jnp.arange(size, dtype=jnp.float32)
    gx, gy = jnp.meshgrid(g, g)
    dst = jnp.stack([gx - t[0], gy - t[1]], -1)
    src = dst @ inv.T
    h, w = image.shape[:2]
    return _bilinear(image, src[..., 0], src[..., 1], w, h, all_or_nothing=False)
  return jax.vmap(one)(images.astype(jnp.float32), matrices.astype(jnp.float32))


def arcface_crop(images: jax.Array, landmarks: jax.Array, size: int = 112) -> jax.Array:
  """insightface's norm_crop: images [B, H, W, C], landmarks [B, 68|5, 2] -> [B, size, size, C]."""
  if images.ndim != 4 or landmarks.ndim != 3 or landmarks.shape[0] != images.shape[0]:
    raise ValueError(f"arcface_crop: expected images [B, H, W, C] and landmarks [B, 68|5, 2], got "
                     f"{tuple(images.shape)} and {tuple(landmarks.shape)}")
  return warp_affine(images, arcface_transform(landmarks, size), size)


__all__ = ["ARCFACE_REFERENCE_112", "arcface_crop", "arcface_transform", "dlib_face_chip",
           "five_points_from_68", "similarity_fit", "warp_affine"]
