"""Tiny test data made on the spot: real mp4 files written with PyAV, and Kinetics-style CSVs."""

from __future__ import annotations

import csv
import os

import av
import numpy as np

# (youtube_id, label, split, frames, fps, (height, width)); kept tiny so preparation takes a second.
GOOD_VIDEOS = [
    ('aaaaaaaaaaa', 'abseiling', 'train', 24, 24, (48, 64)),
    ('bbbbbbbbbbb', 'bowling', 'train', 30, 30, (48, 64)),
    ('ccccccccccc', 'cooking', 'train', 20, 60, (64, 48)),  # 60 fps: the 30 fps cap halves it.
    ('ddddddddddd', 'abseiling', 'validation', 24, 24, (48, 64)),
    ('eeeeeeeeeee', 'bowling', 'validation', 12, 24, (48, 64)),  # Shorter than a test clip: indices wrap.
]
CORRUPT_VIDEO = ('fffffffffff', 'cooking', 'train')
MISSING_VIDEO = ('ggggggggggg', 'bowling', 'validation')
START, END = 10, 20


def kinetics_id(youtube_id: str) -> str:
  """The Kinetics video id (and file stem) of a test row."""
  return f'{youtube_id}_{START:06d}_{END:06d}'


def frame_color(index: int) -> np.ndarray:
  """The flat colour of frame ``index`` of every test video: frames can be told apart after decoding."""
  return np.array([(index * 37) % 200 + 20, (index * 11) % 200 + 20, 128], np.uint8)


def write_video(path: str, num_frames: int, fps: int, size: tuple[int, int]) -> None:
  """Writes an H.264 mp4 (MPEG-4 part 2 where there is no x264) of flat-coloured frames."""
  height, width = size
  with av.open(path, 'w') as container:
    try:
      stream = container.add_stream('libx264', rate=fps)
    except Exception:  # pylint: disable=broad-except
      stream = container.add_stream('mpeg4', rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for i in range(num_frames):
      image = np.broadcast_to(frame_color(i), (height, width, 3)).copy()
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def make_kinetics_folder(root: str) -> tuple[str, str]:
  """Writes a tiny Kinetics copy under ``root`` (class folders, one corrupt file, one missing); returns dirs."""
  videos = os.path.join(root, 'videos')
  annotations = os.path.join(root, 'annotations')
  os.makedirs(annotations, exist_ok=True)
  rows = {'train': [], 'validation': []}
  for youtube_id, label, split, frames, fps, size in GOOD_VIDEOS:
    folder = os.path.join(videos, split, label)
    os.makedirs(folder, exist_ok=True)
    write_video(os.path.join(folder, kinetics_id(youtube_id) + '.mp4'), frames, fps, size)
    rows[split].append((label, youtube_id, split))
  youtube_id, label, split = CORRUPT_VIDEO
  with open(os.path.join(videos, split, label, kinetics_id(youtube_id) + '.mp4'), 'wb') as f:
    f.write(b'\x00\x00\x00\x18ftypmp42' + os.urandom(2000))  # An mp4 header followed by garbage.
  rows[split].append((label, youtube_id, split))
  youtube_id, label, split = MISSING_VIDEO
  rows[split].append((label, youtube_id, split))
  for split, file_name in (('train', 'train.csv'), ('validation', 'validate.csv')):
    with open(os.path.join(annotations, file_name), 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split', 'is_cc'])
      for label, youtube_id, _ in rows[split]:
        writer.writerow([label, youtube_id, START, END, 'val' if split == 'validation' else split, 0])
  return videos, annotations
