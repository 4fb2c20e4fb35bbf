"""The official Charades annotations, read strictly: anything that cannot be used is one sentence naming the file
and line.

An annotations folder holds ``Charades_v1_classes.txt`` (157 lines ``c000 Holding some clothes``: a class id, a
space, its name; the line order is the class index), ``Charades_v1_train.csv`` (the train split) and
``Charades_v1_test.csv`` (the official validation set, here the ``test`` split). The CSVs have a header naming at
least ``id`` and ``actions`` (the official ones also have subject, scene, quality, relevance, verified, script,
objects, descriptions and length, which are not read); ``actions`` is empty for a video without any action, else
``;``-separated ``class start end`` triples in seconds (``c092 11.90 21.20;c147 0.00 12.60``).

Unlike Kinetics, where a bad row is skipped and reported, a Charades file with a bad row (a field count other than
the header's, an empty id, an ``actions`` entry that is not ``cNNN start end`` with times ≥ 0, a class id the
classes file does not list) raises AnnotationError naming the file, the line and the fault: the official files
have none, so such a row means a damaged or edited copy that is better fixed than silently trained around. An
interval written end first (end < start) is kept as the span between its two times.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from nonlocal_jax.data.kinetics_annotations import AnnotationError, csv_records

CLASSES_FILE = 'Charades_v1_classes.txt'
# The TFDS split of each official CSV: Charades_v1_test.csv is the set the paper reports on as "val".
SPLIT_FILES = {'train': 'Charades_v1_train.csv', 'test': 'Charades_v1_test.csv'}
REQUIRED_COLUMNS = ('id', 'actions')

_CLASS_ID = re.compile(r'c\d+')


@dataclasses.dataclass(frozen=True)
class Action:
  """One action of a video: its class index and its interval in seconds (start ≤ end)."""
  label: int
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class Video:
  """One row of a split's CSV."""
  video_id: str  # The id, also the video file's stem ('46GP8' -> 46GP8.mp4).
  actions: tuple[Action, ...]  # In the CSV's order; empty for a video without any action.

  @property
  def labels(self) -> list[int]:
    """The video's classes (each once, sorted): its video-level label."""
    return sorted({a.label for a in self.actions})


@dataclasses.dataclass
class Annotations:
  """Everything read from an annotations folder."""
  class_ids: list[str]  # 'c000', ... in class-index order.
  class_names: list[str]  # 'c000 Holding some clothes', ...: the id and the name, unique.
  videos: dict[str, list[Video]]  # Per TFDS split ('train', 'test'), in the CSV's order.


def read_annotations(annotations_dir: str) -> Annotations:
  """Reads the classes file and both split CSVs of ``annotations_dir``; raises AnnotationError or FileNotFoundError
  (one sentence) for anything unusable."""
  if not os.path.isdir(annotations_dir):
    raise FileNotFoundError(f'No annotations folder at {annotations_dir}: pass --annotations=DIR, the folder that '
                            f'holds {CLASSES_FILE}, {SPLIT_FILES["train"]} and {SPLIT_FILES["test"]}.')
  for name in (CLASSES_FILE, *SPLIT_FILES.values()):
    if not os.path.isfile(os.path.join(annotations_dir, name)):
      raise FileNotFoundError(f'No {name} in {annotations_dir}: put the official Charades annotation files there '
                              f'({CLASSES_FILE}, {SPLIT_FILES["train"]}, {SPLIT_FILES["test"]}).')
  ids, names = read_classes(os.path.join(annotations_dir, CLASSES_FILE))
  index = {c: i for i, c in enumerate(ids)}
  videos = {split: read_split(os.path.join(annotations_dir, name), index) for split, name in SPLIT_FILES.items()}
  return Annotations(ids, names, videos)


def read_classes(path: str) -> tuple[list[str], list[str]]:
  """(class ids, 'id name' strings) of a classes file, in line order."""
  ids, names = [], []
  for line_number, line in enumerate(_text(path).splitlines(), 1):
    line = line.strip()
    if not line:
      continue
    class_id, _, name = line.partition(' ')
    if not _CLASS_ID.fullmatch(class_id) or not name.strip():
      raise AnnotationError(f'{path} line {line_number} is "{line}", not a class id and its name such as '
                            '"c000 Holding some clothes": fix that line.')
    if class_id in ids:
      raise AnnotationError(f'{path} line {line_number} lists class {class_id} a second time: keep one line per '
                            'class.')
    ids.append(class_id)
    names.append(f'{class_id} {name.strip()}')
  if not ids:
    raise AnnotationError(f'{path} lists no class: use the official {CLASSES_FILE} (one "c000 Name" line per '
                          'class).')
  return ids, names


def read_split(path: str, class_index: dict[str, int]) -> list[Video]:
  """The rows of one split's CSV as Videos; ``class_index`` maps class ids to indices."""
  records = csv_records(path, _text(path))
  if not records:
    raise AnnotationError(f'{path} is empty: use the official Charades CSV (a header with id and actions, one row '
                          'per video).')
  _, header = records[0]
  columns = [c.strip().lower() for c in header]
  missing = [c for c in REQUIRED_COLUMNS if c not in columns]
  if missing:
    raise AnnotationError(f'{path} has no {" or ".join(missing)} column (its header starts '
                          f'{",".join(header[:4])}): use the official Charades CSV, whose header names id and actions.')
  videos = []
  for line, fields in records[1:]:
    if len(fields) != len(columns):
      raise AnnotationError(f'{path} line {line} has {len(fields)} fields where the header has {len(columns)}: fix '
                            'that row.')
    row = dict(zip(columns, fields))
    video_id = row['id'].strip()
    if not video_id:
      raise AnnotationError(f'{path} line {line} has an empty id: give the video\'s id or remove the row.')
    videos.append(Video(video_id, parse_actions(row['actions'], class_index, f'{path} line {line}')))
  return videos


def parse_actions(field: str, class_index: dict[str, int], where: str) -> tuple[Action, ...]:
  """The actions of an ``actions`` field ('c092 11.90 21.20;c147 0.00 12.60'; empty: none); ``where`` names the row
  in the error."""
  actions = []
  for entry in field.split(';'):
    parts = entry.split()
    if not parts:
      continue  # An empty field (a video without actions), or a stray ';'.
    times = [_seconds(p) for p in parts[1:]]
    if len(parts) != 3 or not all(math.isfinite(t) and t >= 0 for t in times):
      raise AnnotationError(f'{where} has the action "{entry.strip()}" in its actions field, not "class start end" '
                            'with times in seconds ≥ 0 such as "c092 11.90 21.20": fix that row.')
    if parts[0] not in class_index:
      raise AnnotationError(f'{where} names class {parts[0]}, which the classes file does not list: fix the row or '
                            f'use the {CLASSES_FILE} of the same release.')
    actions.append(Action(class_index[parts[0]], min(times), max(times)))
  return tuple(actions)


def _seconds(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    return math.nan


def _text(path: str) -> str:
  with open(path, 'rb') as f:
    data = f.read()
  # Only ids, class ids and numbers are read; a stray byte in a free-text column (scripts, descriptions) must not
  # stop the preparation, so undecodable bytes are replaced rather than refused.
  return data.decode('utf-8-sig', errors='replace')
