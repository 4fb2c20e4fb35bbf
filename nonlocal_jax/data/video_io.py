"""Decoding video files with PyAV into resized, frame-rate-capped JPEG frames.

This module imports neither TensorFlow nor JAX: it runs in the worker processes of the Kinetics preparation,
which should start fast and stay small (one per core).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import threading
import time
from typing import Optional

import av
import numpy as np
from PIL import Image

from nonlocal_jax import paths


class VideoDecodeError(Exception):
  """A video file could not be turned into frames (missing, unreadable, corrupt or empty)."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass
class DecodedVideo:
  """The frames of one video as JPEG bytes, with the frame rate they are stored at."""
  frames: list[bytes]  # One JPEG per kept frame, in display order.
  fps: float  # Frames per second of the kept frames (the source rate, capped).
  height: int  # Frame height after resizing.
  width: int  # Frame width after resizing.


def scaled_size(height: int, width: int, short_side: Optional[int]) -> tuple[int, int]:
  """(height, width) with the shorter side scaled to ``short_side`` (None or 0: unchanged), both even.

  Even sizes keep YUV→RGB conversion exact in swscale and match what ffmpeg-based Kinetics scripts produce.
  """
  if not short_side:
    return height, width
  if height <= width:
    new_h, new_w = short_side, width * short_side / height
  else:
    new_h, new_w = height * short_side / width, short_side
  return max(2, int(round(new_h / 2)) * 2), max(2, int(round(new_w / 2)) * 2)


def decode_video(path: str, short_side: Optional[int] = 256, max_fps: Optional[float] = 30.0,
                 jpeg_quality: int = 90) -> DecodedVideo:
  """Decodes ``path`` into JPEG frames with the shorter side scaled to ``short_side`` and at most ``max_fps``.

  Frames above the rate cap are dropped by timestamp (the first frame of each 1/max_fps slot is kept), so a
  variable-frame-rate file is handled too. Raises VideoDecodeError, never anything else, for a bad file.
  """
  if not os.path.isfile(path):
    raise VideoDecodeError('missing', f'no file at {path}')
  try:
    return _decode(path, short_side, max_fps, jpeg_quality)
  except VideoDecodeError:
    raise
  except (av.error.FFmpegError, OSError, ValueError, RuntimeError, IndexError, ZeroDivisionError) as e:
    raise VideoDecodeError('corrupt', f'{type(e).__name__}: {e}') from e


def _decode(path: str, short_side: Optional[int], max_fps: Optional[float], jpeg_quality: int) -> DecodedVideo:
  with av.open(path) as container:
    if not container.streams.video:
      raise VideoDecodeError('unreadable', 'the file has no video stream')
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    source_fps = float(rate) if rate else 0.0
    if source_fps <= 0:
      source_fps = 30.0  # A file without a stated rate: treat frames as 30 fps, the Kinetics norm.
    cap = float(max_fps) if max_fps else None
    keep_fps = min(source_fps, cap) if cap else source_fps
    frames: list[bytes] = []
    size = None
    last_slot = None
    for index, frame in enumerate(container.decode(stream)):
      if cap and source_fps > cap:
        t = frame.time if frame.time is not None else index / source_fps
        # The small epsilon keeps a frame at exactly k/cap seconds in slot k despite float rounding.
        slot = int(np.floor(t * cap + 1e-6))
        if last_slot is not None and slot <= last_slot:
          continue
        last_slot = slot
      if size is None:
        size = scaled_size(frame.height, frame.width, short_side)
      rgb = frame.reformat(width=size[1], height=size[0], format='rgb24', interpolation='BILINEAR')
      buffer = io.BytesIO()
      rgb.to_image().save(buffer, format='JPEG', quality=jpeg_quality)
      frames.append(buffer.getvalue())
  if not frames:
    raise VideoDecodeError('empty', 'the video stream has no decodable frames')
  return DecodedVideo(frames=frames, fps=keep_fps, height=size[0], width=size[1])


@dataclasses.dataclass
class DecodeJob:
  """One video to decode in a worker process, and where its decoded frames are cached."""
  key: str  # The video id, e.g. '--07WQ2iBlw_000001_000011'.
  path: Optional[str]  # The file, or None when no file was found for the annotation row.
  short_side: Optional[int]  # Shorter side after resizing (None: keep).
  max_fps: Optional[float]  # Frame-rate cap (None: keep).
  jpeg_quality: int  # JPEG quality of the stored frames.
  cache_path: Optional[str]  # Where this video's decoded frames are kept between runs (None: no cache).


@dataclasses.dataclass
class DecodeResult:
  """What a worker returns: the decoded video, or why there is none."""
  key: str  # The job's video id.
  video: Optional[DecodedVideo]  # None when the video was skipped.
  reason: str = ''  # 'missing', 'unreadable', 'corrupt', 'empty' or 'error' when skipped.
  detail: str = ''  # A human-readable explanation for the report.
  from_cache: bool = False  # True when the frames came from an earlier, interrupted run.


def run_decode_job(job: DecodeJob) -> DecodeResult:
  """Decodes one video (or reads it from its cache); catches every error so that one file never stops a run."""
  try:
    if job.cache_path and os.path.isfile(job.cache_path):
      try:
        with open(job.cache_path, 'rb') as f:
          return DecodeResult(job.key, pickle.load(f), from_cache=True)
      except Exception:  # pylint: disable=broad-except
        pass  # A cache file cut short by an interruption: decode again.
    if job.path is None:
      return DecodeResult(job.key, None, 'missing', 'no video file found for this annotation row')
    video = decode_video(job.path, job.short_side, job.max_fps, job.jpeg_quality)
    if job.cache_path:
      # Write-then-rename: an interrupted run leaves either no cache file or a complete one, never half of one.
      os.makedirs(os.path.dirname(job.cache_path), exist_ok=True)
      paths.write_atomic(job.cache_path, pickle.dumps(video, protocol=pickle.HIGHEST_PROTOCOL))
    return DecodeResult(job.key, video)
  except VideoDecodeError as e:
    return DecodeResult(job.key, None, e.reason, e.detail)
  except Exception as e:  # pylint: disable=broad-except
    return DecodeResult(job.key, None, 'error', f'{type(e).__name__}: {e}')


def exit_with_parent(parent_pid: int, interval: float = 0.2) -> None:
  """Makes this worker process exit within ``interval`` seconds of ``parent_pid`` dying (pool initializer).

  A worker blocked on its task queue or busy decoding would otherwise outlive a parent that was killed with
  SIGKILL: the pool's queues are held open by the workers themselves, so they never see the end of their input.
  An orphan is re-parented (to init or a sub-reaper), which changes its parent id: a daemon thread polls for that.
  """
  def watch():
    while os.getppid() == parent_pid:
      time.sleep(interval)
    os._exit(1)  # pylint: disable=protected-access  # No clean-up: there is nobody left to report to.
  threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()
