"""What makes a synthetic face look like a photo: scenes, a head around the face, occluders, camera.

The face models cover the face only (forehead to chin, ear to ear), so a render over a flat colour is
a mask floating in space -- nothing a face detector or a network trained on photos has seen. These
functions add, each switchable in `config.data.synthetic`:

- `natural_backgrounds`: generated scenes with natural-image statistics: a 1/f ("pink") amplitude
  spectrum per colour channel (the power law photos follow), overlaid with a few large flat-ish
  regions (walls, doors, windows) with soft edges. No image files are needed.
- `draw_head`: the parts of a person that are not in the face model, drawn behind the face from
  its projected 68 landmarks: hair (an ellipse above and around the face, with strands), a neck
  under the chin in the face's own skin colour, and shoulders in a clothing colour.
- `occlude`: random objects in front of the face (a hand-like blob, a bar, a textured patch); the
  covered pixels leave the skin mask, so photometric losses ignore them.
- `camera_artefacts`: defocus/motion blur, sensor noise, white balance, gamma and JPEG compression.

All images are float32 RGB in [0, 1], [S, S, 3]; landmarks [68, 2] crop pixels (project convention);
masks [S, S] coverage in [0, 1].
"""
from __future__ import annotations

import cv2
import numpy as np

# Hair colours (linear-ish RGB in [0, 1]): black, dark brown, brown, auburn, blond, grey.
_HAIR = np.array([[0.05, 0.04, 0.04], [0.16, 0.10, 0.07], [0.30, 0.20, 0.12],
                  [0.42, 0.18, 0.10], [0.70, 0.58, 0.38], [0.62, 0.62, 0.62]])


def pink_noise(rng: np.random.Generator, size: int, channels: int = 3, exponent: float = 1.0
               ) -> np.ndarray:
  """[size, size, channels] float32 in [0, 1]: random phases, amplitude spectrum 1 / f^exponent.

  Photos have amplitude spectra close to 1 / f (exponent ~1); larger exponents are smoother."""
  fy = np.fft.fftfreq(size)[:, None]
  fx = np.fft.rfftfreq(size)[None, :]
  f = np.sqrt(fx ** 2 + fy ** 2)
  f[0, 0] = 1.0
  amp = f ** -exponent
  amp[0, 0] = 0.0
  out = np.empty((size, size, channels), np.float32)
  for c in range(channels):
    phase = rng.uniform(0, 2 * np.pi, size=amp.shape)
    field = np.fft.irfft2(amp * np.exp(1j * phase), s=(size, size))
    field = (field - field.mean()) / (field.std() + 1e-9)
    out[..., c] = field
  return out


def natural_backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[n, size, size, 3] float32 in [0, 1]: 1/f-textured scenes with a few large soft regions."""
  out = np.empty((n, size, size, 3), np.float32)
  for i in range(n):
    base = rng.uniform(0.1, 0.9, size=3)
    texture = pink_noise(rng, size, 3, exponent=rng.uniform(0.9, 1.6))
    # channels mostly share their structure in photos (luminance dominates)
    lum = texture[..., :1]
    tex = 0.75 * lum + 0.25 * texture
    img = base + tex * rng.uniform(0.05, 0.2)
    for _ in range(int(rng.integers(1, 5))):          # walls, doors, windows: big soft rectangles
      colour = rng.uniform(0.05, 0.95, size=3)
      x0, y0 = rng.integers(-size // 4, size, size=2)
      w, h = rng.integers(size // 6, size, size=2)
      region = np.zeros((size, size), np.float32)
      cv2.rectangle(region, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), 1.0, -1)
      k = int(rng.integers(0, 4)) * 2 + 1
      region = cv2.GaussianBlur(region, (k, k), 0)[..., None]
      img = img * (1 - region) + (colour + tex * rng.uniform(0.02, 0.12)) * region
    out[i] = np.clip(img, 0, 1)
  return out


def skin_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """[3] mean colour of the face pixels (mask > 0.5) of an [S, S, 3] render; grey if none."""
  m = mask > 0.5
  return image[m].mean(0) if m.any() else np.full(3, 0.5, np.float32)


def draw_head(background: np.ndarray, landmarks: np.ndarray, skin: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
  """Draws hair, neck and shoulders behind a face onto a copy of background [S, S, 3].

  landmarks [68, 2] are the face's projected points (0-16 the jaw, 17-26 the brows), skin [3] its
  colour. Sizes follow the face: the hair ellipse spans the jaw width and rises above the brows by
  about the brow-to-chin height; the neck is about 0.7 jaw widths wide under the chin."""
  img = np.ascontiguousarray(background, np.float32).copy()
  size = img.shape[0]
  lm = np.asarray(landmarks, np.float64)
  jaw, brows, chin = lm[0:17], lm[17:27], lm[8]
  width = float(np.linalg.norm(jaw[16] - jaw[0]))
  height = float(chin[1] - brows[:, 1].min())
  if not (np.isfinite(width) and width > 2 and height > 2):
    return img
  centre = np.array([(jaw[0, 0] + jaw[16, 0]) / 2, brows[:, 1].min() + 0.05 * height])
  tilt = float(np.degrees(np.arctan2(jaw[16, 1] - jaw[0, 1], jaw[16, 0] - jaw[0, 0])))
  # shoulders and clothing first (furthest back)
  cloth = rng.uniform(0.05, 0.9, size=3)
  sh_c = (int(round(chin[0])), int(round(chin[1] + 1.3 * height)))
  sh_ax = (int(round(width * rng.uniform(1.1, 1.6))), int(round(height * 0.9)))
  cv2.ellipse(img, sh_c, sh_ax, tilt, 0, 360, cloth.tolist(), -1, cv2.LINE_AA)
  # neck: a band from below the jaw sides down past the chin, a little darker (in shadow)
  neck = skin * rng.uniform(0.6, 0.85)
  half = 0.35 * width
  top = (jaw[4] + jaw[12]) / 2
  pts = np.array([[top[0] - half, top[1]], [top[0] + half, top[1]],
                  [chin[0] + half * 1.05, chin[1] + 1.1 * height],
                  [chin[0] - half * 1.05, chin[1] + 1.1 * height]])
  cv2.fillConvexPoly(img, np.round(pts * 16).astype(np.int32), neck.tolist(), cv2.LINE_AA, 4)
  # hair: an ellipse around the upper head, with darker and lighter strands
  hair = _HAIR[rng.integers(0, len(_HAIR))] * rng.uniform(0.8, 1.2)
  axes = (int(round(width * rng.uniform(0.55, 0.68))), int(round(height * rng.uniform(0.9, 1.2))))
  layer = np.zeros((size, size), np.float32)
  cv2.ellipse(layer, (int(round(centre[0])), int(round(centre[1]))), axes, tilt, 0, 360, 1.0, -1,
              cv2.LINE_AA)
  if rng.random() < 0.5:   # long hair: down the sides to the jaw line
    for side in (jaw[0], jaw[16]):
      cv2.ellipse(layer, (int(round(side[0])), int(round(side[1]))),
                  (int(round(0.14 * width)), int(round(0.6 * height))), tilt, 0, 360, 1.0, -1,
                  cv2.LINE_AA)
  strands = pink_noise(rng, size, 1, exponent=1.8)[..., 0] * 0.25
  colour = np.clip(hair[None, None, :] * (1 + strands[..., None]), 0, 1)
  a = layer[..., None]
  return np.clip(img * (1 - a) + colour * a, 0, 1)


def occlude(image: np.ndarray, mask: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
  """One random object in front of the face: -> (image [S, S, 3], skin mask [S, S]) copies.

  Shapes: a skin-toned hand-like blob, a bar (microphone, pen, glasses arm) or a textured patch,
  placed on a random point of the face and covering up to about a third of it. Covered pixels are
  taken out of the mask (they are not face any more); the landmarks stay where the face has them."""
  size = image.shape[0]
  lm = np.asarray(landmarks, np.float64)
  width = max(float(np.ptp(lm[:, 0])), 4.0)
  layer = np.zeros((size, size), np.float32)
  at = lm[rng.integers(0, len(lm))] + rng.normal(scale=0.1 * width, size=2)
  kind = rng.integers(0, 3)
  angle = float(rng.uniform(0, 180))
  if kind == 0:        # hand-like blob: a palm ellipse and a few finger ellipses
    palm = (int(0.22 * width), int(0.16 * width))
    cv2.ellipse(layer, (int(at[0]), int(at[1])), palm, angle, 0, 360, 1.0, -1, cv2.LINE_AA)
    for k in range(4):
      d = np.radians(angle + (k - 1.5) * 18)
      tip = at + 0.3 * width * np.array([np.cos(d), np.sin(d)])
      cv2.ellipse(layer, (int(tip[0]), int(tip[1])), (int(0.14 * width), int(0.04 * width) + 1),
                  float(np.degrees(d)), 0, 360, 1.0, -1, cv2.LINE_AA)
    colour = np.clip(skin_colour(image, mask) * rng.uniform(0.7, 1.3, size=3), 0, 1)
    fill = np.broadcast_to(colour, image.shape)
  elif kind == 1:      # a bar
    d = np.radians(angle)
    half = 0.5 * width * rng.uniform(0.4, 1.0) * np.array([np.cos(d), np.sin(d)])
    thick = max(1, int(width * rng.uniform(0.03, 0.1)))
    p0, p1 = np.round(at - half).astype(int), np.round(at + half).astype(int)
    cv2.line(layer, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1.0, thick, cv2.LINE_AA)
    fill = np.broadcast_to(rng.uniform(0, 1, size=3), image.shape)
  else:                # a textured patch (a scarf, a sign, an object)
    ax = tuple(int(v) for v in np.maximum(2, rng.uniform(0.1, 0.3, size=2) * width))
    cv2.ellipse(layer, (int(at[0]), int(at[1])), ax, angle, 0, 360, 1.0, -1, cv2.LINE_AA)
    fill = natural_backgrounds(rng, 1, size)[0]
  a = layer[..., None]
  out = image * (1 - a) + fill * a
  return np.clip(out, 0, 1).astype(np.float32), (mask * (1 - layer)).astype(np.float32)


def camera_artefacts(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[S, S, 3] float32 in [0, 1] -> a copy as a cheap camera might take it.

  In order: white balance gains (+-10 %), gamma (0.75-1.35), blur (Gaussian sigma up to 1.2 px of
  a 224 crop, or a short motion blur), sensor noise (sigma up to 0.03), JPEG (quality 30-95). Each
  step is applied with probability 1/2, so some images stay clean."""
  size = image.shape[0]
  img = np.asarray(image, np.float32)
  if rng.random() < 0.5:
    img = img * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
  if rng.random() < 0.5:
    img = np.clip(img, 0, 1) ** np.float32(rng.uniform(0.75, 1.35))
  if rng.random() < 0.5:
    if rng.random() < 0.7:
      sigma = rng.uniform(0.3, 1.2) * size / 224
      img = cv2.GaussianBlur(img, (0, 0), sigma)
    else:
      k = max(3, int(round(rng.uniform(3, 7) * size / 224)) | 1)
      kernel = np.zeros((k, k), np.float32)
      kernel[k // 2] = 1.0 / k
      rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
      kernel = cv2.warpAffine(kernel, rot, (k, k))
      img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
  if rng.random() < 0.5:
    img = img + rng.normal(scale=rng.uniform(0.005, 0.03), size=img.shape).astype(np.float32)
  img = np.clip(img, 0, 1)
  if rng.random() < 0.5:
    u8 = np.round(img * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                  int(rng.integers(30, 96))])
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
  return np.ascontiguousarray(img, np.float32)
