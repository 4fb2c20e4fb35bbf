"""The frame operations: a view is the stored frame's window, resized bilinearly (on the host when it shrinks, on
the device when it grows) and flipped on the device, and bad settings fail with the field's name. References:
NumPy float64 bilinear resizing written here, and whole-frame decoding."""

import io
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nonlocal_jax import data
from nonlocal_jax.data import device_input
from nonlocal_jax.data import image_header
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import transforms
from tests.data.conftest import synthetic_config


def test_bad_config_values_name_the_field(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, crop_size=40)
  with pytest.raises(ValueError, match='config.data.crop_size'):
    data.create_train_iterator(c, seed=0, layout=layout_lib.ProcessLayout(0, 1, 1))


def _bilinear(image: np.ndarray, size: int) -> np.ndarray:
  """float64 resize of (H, W, C) to (size, size, C): half-pixel centres, edge samples clamped, no antialiasing."""
  def axis(n):
    src = (np.arange(size) + 0.5) * (n / size) - 0.5
    low = np.floor(src)
    frac = src - low
    return np.clip(low, 0, n - 1).astype(int), np.clip(low + 1, 0, n - 1).astype(int), frac
  y0, y1, fy = axis(image.shape[0])
  x0, x1, fx = axis(image.shape[1])
  img = image.astype(np.float64)
  rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
  return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _frames(fmt: str, count=3, shape=(48, 70)):
  rng = np.random.default_rng(0)
  # Smooth content (JPEG keeps it well) plus a few sharp edges.
  base = rng.uniform(0, 255, (count, shape[0] // 8 + 1, shape[1] // 8 + 1, 3))
  pixels = np.kron(base, np.ones((1, 8, 8, 1)))[:, :shape[0], :shape[1]].astype(np.uint8)
  encoded = []
  for p in pixels:
    buffer = io.BytesIO()
    Image.fromarray(p).save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
    encoded.append(buffer.getvalue())
  return pixels, encoded


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG'])
@pytest.mark.parametrize('window,size,flip', [((5, 9, 30, 30), 40, False), ((0, 0, 48, 48), 32, True),
                                              ((10, 30, 37, 37), 37, True), ((17, 40, 31, 31), 24, False),
                                              ((3, 50, 17, 17), 40, True)])
def test_a_view_is_the_window_flipped_and_resized(fmt, window, size, flip):
  pixels, encoded = _frames(fmt)
  # The reference decodes whole frames (tf.io.decode_image), never a window.
  whole = np.stack([tf.io.decode_image(e, channels=3).numpy() for e in encoded])
  if fmt == 'PNG':
    np.testing.assert_array_equal(whole, pixels)
  top, left, h, w = window
  expected = []
  for frame in whole[:, top:top + h, left:left + w]:
    frame = frame[:, ::-1] if flip else frame
    expected.append(frame if (h, w) == (size, size) else _bilinear(frame, size))
  expected = np.stack(expected)
  decoder = transforms.FrameDecoder()
  network_input = device_input.network_input({'normalization': 'none'})
  for got in (decoder.encoded(encoded, window, size), decoder.pixels(whole, window, size)):
    side = min(h, size)  # Larger windows are resized on the host, smaller ones shipped as they are.
    assert got.dtype == np.uint8 and got.shape == (3, side, side, 3)
    placed = np.zeros((1, 3, size, size, 3), np.uint8)
    assert transforms.place(got, placed[0]) == side
    batch = {'clips': placed, 'view_side': np.array([side]), 'view_flip': np.array([flip])}
    view = np.asarray(network_input(batch)[0], np.float64)
    # A host resize rounds to uint8; the device's is float32.
    assert np.abs(view - expected).max() <= (0.5 + 1e-3 if h > size else 2e-3)


def test_a_jpeg_window_has_the_whole_decodes_pixels_at_its_edges():
  # Chroma upsampling near a window's edge needs the pixels beyond it: the margin keeps them.
  rng = np.random.default_rng(1)
  noise = rng.integers(0, 256, (64, 96, 3), np.uint8)  # Noise: the worst case for chroma subsampling.
  encoded = [tf.io.encode_jpeg(noise, quality=90).numpy()]
  whole = tf.io.decode_jpeg(encoded[0], channels=3).numpy()
  decoder = transforms.FrameDecoder()
  for _ in range(20):
    top, left = int(rng.integers(0, 40)), int(rng.integers(0, 60))
    h, w = int(rng.integers(9, 24)), int(rng.integers(9, 36))
    got = decoder.encoded_window(encoded, (top, left, h, w))[0]
    np.testing.assert_array_equal(got, whole[top:top + h, left:left + w])


def test_the_decoder_writes_no_autograph_source_files(tmp_path, monkeypatch):
  # Autograph writes each function it converts to a file in the temporary directory, which a killed run leaves.
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  transforms.FrameDecoder()
  assert not list(tmp_path.glob('__autograph_generated_file*'))


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG'])
def test_frame_size_reads_the_header(fmt):
  _, encoded = _frames(fmt, count=1, shape=(37, 53))
  assert image_header.frame_size(encoded[0]) == (37, 53)


def test_an_unknown_frame_format_is_one_sentence():
  with pytest.raises(image_header.UnknownImageFormat, match='neither JPEG nor PNG'):
    image_header.frame_size(b'GIF89a' + bytes(20))
