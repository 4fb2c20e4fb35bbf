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


# A tiny Charades copy: 10 classes (the class count of the multi-label training tests, whose compiled steps a run on
# it reuses); (id, split, frames, source fps, actions field); frames 48×64.
CHARADES_CLASSES = ['c000 Holding some clothes', 'c001 Putting clothes somewhere', 'c002 Taking some clothes',
                    'c003 Throwing clothes somewhere', 'c004 Tidying some clothes', 'c005 Washing some clothes',
                    'c006 Closing a door', 'c007 Fixing a door', 'c008 Opening a door', 'c009 Putting something on a '
                    'table']
CHARADES_VIDEOS = [
    ('AAAAA', 'train', 40, 20, 'c001 0.00 0.50;c003 1.20 1.60;c002 5.00 6.00'),  # c002 after the video's end.
    ('BBBBB', 'train', 30, 60, 'c000 0.10 0.20'),  # 60 fps: stored at 30 fps, 15 frames.
    ('CCCCC', 'train', 24, 24, ''),  # No action: every clip's label is all zeros.
    ('FFFFF', 'train', 6, 10, 'c004 0.45 0.55'),  # Shorter than an 8-frame window: its clips wrap.
    ('DDDDD', 'test', 32, 16, 'c004 0.00 1.00;c001 1.00 2.00'),
    ('EEEEE', 'test', 16, 16, 'c002 0.50 0.70;c002 0.10 0.20'),  # One class twice.
]
CHARADES_MISSING = ('MISSG', 'train', 'c001 0.00 1.00')
CHARADES_CORRUPT = ('CORRP', 'train', 'c002 0.00 1.00')
CHARADES_EMPTY = ('EMPTY', 'test', 'c003 0.00 1.00')  # A valid container whose video stream has no frame.
CHARADES_HEADER = ['id', 'subject', 'scene', 'quality', 'relevance', 'verified', 'script', 'objects', 'descriptions',
                   'actions', 'length']


def write_empty_video(path: str) -> None:
  """Writes an AVI file with a video stream and no frame in it (an mp4 without frames drops its stream)."""
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    container.start_encoding()


def write_charades_csv(path: str, rows) -> None:
  """Writes a Charades CSV with the official header; ``rows`` are (id, actions) pairs, the other columns filled
  with free text (a description with a comma and a quote, as the official files have)."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(CHARADES_HEADER)
    for video_id, actions in rows:
      writer.writerow([video_id, 'S1', 'Bedroom', 6, 7, 'Yes', 'A person walks, then "sits".', 'clothes',
                       'They take clothes; then, they leave.', actions, 10.0])


def make_charades_folder(root: str) -> tuple[str, str]:
  """Writes the tiny Charades copy under ``root`` (videos in sub-folders, one missing, one corrupt, one empty);
  returns the videos and annotations folders."""
  videos = os.path.join(root, 'videos')
  annotations = os.path.join(root, 'annotations')
  os.makedirs(os.path.join(videos, 'part1'), exist_ok=True)
  os.makedirs(annotations, exist_ok=True)
  rows = {'train': [], 'test': []}
  for video_id, split, frames, fps, actions in CHARADES_VIDEOS:
    write_video(os.path.join(videos, 'part1', video_id + '.mp4'), frames, fps, (48, 64))
    rows[split].append((video_id, actions))
  with open(os.path.join(videos, CHARADES_CORRUPT[0] + '.mp4'), 'wb') as f:
    f.write(b'\x00\x00\x00\x18ftypmp42' + os.urandom(2000))
  write_empty_video(os.path.join(videos, CHARADES_EMPTY[0] + '.avi'))
  for video_id, split, actions in (CHARADES_MISSING, CHARADES_CORRUPT, CHARADES_EMPTY):
    rows[split].append((video_id, actions))
  with open(os.path.join(annotations, 'Charades_v1_classes.txt'), 'w') as f:
    f.write('\n'.join(CHARADES_CLASSES) + '\n')
  write_charades_csv(os.path.join(annotations, 'Charades_v1_train.csv'), rows['train'])
  write_charades_csv(os.path.join(annotations, 'Charades_v1_test.csv'), rows['test'])
  return videos, annotations
