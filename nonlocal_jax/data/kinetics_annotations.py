"""The official Kinetics CSV annotations, read strictly: every bad row is named with its file and line.

A file is ``label,youtube_id,time_start,time_end[,split][,is_cc]`` with a header (column order free, names in any
case; ``time_start``/``time_end`` default to 0 and the split comes from the ``split`` column or the file name). A
file that cannot be used at all (empty, no rows, no ``youtube_id`` or ``label`` column, not UTF-8, a quote left
open, no way to tell its split) raises AnnotationError, one sentence naming the file (and line) and what to fix.
A row that cannot be used (empty label, missing id, bad number, fewer or more fields than the header, unknown
split) is returned as a BadRow with its file and line, and the builder skips and reports it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
from typing import Optional

# Split names used in the official CSVs' ``split`` column, mapped to TFDS split names.
SPLIT_ALIASES = {'train': 'train', 'training': 'train', 'val': 'validation', 'valid': 'validation',
                 'validate': 'validation', 'validation': 'validation', 'test': 'test', 'testing': 'test'}

REQUIRED_COLUMNS = ('label', 'youtube_id')

_FIX_COLUMNS = 'give it the header of the official CSVs, label,youtube_id,time_start,time_end,split'


class AnnotationError(ValueError):
  """An annotation file that cannot be used at all; the message names the file (and line) and what to fix."""


def video_id(youtube_id: str, time_start, time_end) -> str:
  """The id and file stem of a Kinetics clip: ``{youtube_id}_{start:06d}_{end:06d}``."""
  return f'{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}'


@dataclasses.dataclass(frozen=True)
class Annotation:
  """One usable row of the official CSVs."""
  video_id: str  # '{youtube_id}_{start:06d}_{end:06d}'.
  youtube_id: str  # The YouTube id alone (some copies name files by it).
  label: str  # Class name, never empty.
  split: str  # TFDS split name: 'train', 'validation' or 'test'.


@dataclasses.dataclass(frozen=True)
class BadRow:
  """A row that was skipped: where it is and why."""
  file: str  # Path of the CSV file.
  line: int  # Line of the file where the row starts (1 is the header).
  reason: str  # Short tag for the report: 'no label', 'no youtube_id', 'bad number', 'short row', ...
  detail: str  # What is wrong with it, in words.
  split: str = ''  # The split it would have gone to, where known.


@dataclasses.dataclass
class Annotations:
  """Everything read from an annotations folder: the usable rows and the skipped ones."""
  rows: list[Annotation]
  bad_rows: list[BadRow]


def read_annotations(annotations_dir: str) -> Annotations:
  """Reads every ``*.csv`` in ``annotations_dir``; raises AnnotationError (or FileNotFoundError) for unusable files."""
  if not os.path.isdir(annotations_dir):
    raise FileNotFoundError(f'No annotations folder at {annotations_dir}: pass --annotations=DIR, the folder that '
                            'holds the official Kinetics CSV files (train.csv, validate.csv, ...).')
  files = sorted(f for f in os.listdir(annotations_dir) if f.lower().endswith('.csv'))
  if not files:
    raise FileNotFoundError(f'No .csv files in {annotations_dir}: pass --annotations=DIR, the folder that holds '
                            'the official Kinetics CSV files (train.csv, validate.csv, ...).')
  result = Annotations([], [])
  for name in files:
    _read_file(os.path.join(annotations_dir, name), result)
  return result


def split_from_file_name(name: str) -> Optional[str]:
  """The TFDS split a file name names ('kinetics_700_val.csv' → 'validation'), or None."""
  for word in re.split(r'[^a-z]+', os.path.basename(name).lower()):
    if word in SPLIT_ALIASES:
      return SPLIT_ALIASES[word]
  return None


def _read_file(path: str, result: Annotations) -> None:
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8-sig')  # A byte-order mark (spreadsheet exports) is not part of the first column.
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise AnnotationError(f'{path} line {line} is not UTF-8 text (byte 0x{data[e.start]:02x}): save the file as '
                          'UTF-8.') from e
  records = csv_records(path, text)
  if not records:
    raise AnnotationError(f'{path} is empty: {_FIX_COLUMNS}, and one row per clip, or remove it from the folder.')
  _, header = records[0]
  columns = [c.strip().lower() for c in header]
  missing = [c for c in REQUIRED_COLUMNS if c not in columns]
  if missing == ['label']:
    # Some releases ship their test.csv without labels: such clips can be neither trained nor scored on.
    raise AnnotationError(f'{path} has no label column (its header is {",".join(header)}): add the labels, or move '
                          'the file out of the annotations folder if its clips are unlabelled.')
  if missing:
    raise AnnotationError(f'{path} has no {" or ".join(missing)} column (its header is {",".join(header)}): '
                          f'{_FIX_COLUMNS}.')
  if len(records) == 1:
    raise AnnotationError(f'{path} has a header but no rows: add one row per clip, or remove it from the folder.')
  file_split = split_from_file_name(path)
  if 'split' not in columns and file_split is None:
    raise AnnotationError(f'Cannot tell the split of the rows of {path}: give it a "split" column or a file name '
                          'containing train, val or test.')
  for line, fields in records[1:]:
    row = _parse_row(path, line, columns, fields, file_split)
    (result.bad_rows if isinstance(row, BadRow) else result.rows).append(row)


def csv_records(path: str, text: str) -> list[tuple[int, list[str]]]:
  """The CSV records of ``text`` with the line each starts on (a quoted field may span lines); blank lines dropped;
  a quoting error is an AnnotationError naming ``path`` and the line (also for Charades' CSVs)."""
  reader = csv.reader(io.StringIO(text, newline=''), strict=True)
  records = []
  while True:
    start = reader.line_num + 1
    try:
      fields = next(reader)
    except StopIteration:
      return records
    except csv.Error as e:
      if 'unexpected end of data' in str(e):
        raise AnnotationError(f'{path} line {start} opens a quote (") that is never closed: close it or remove '
                              'it.') from e
      raise AnnotationError(f'{path} line {start} cannot be read as CSV ({e}): fix that line.') from e
    if reader.line_num != start:
      # Kinetics fields never hold line breaks: a record over several lines is a quote closed lines later.
      raise AnnotationError(f'{path} line {start} opens a quote (") that runs on to line {reader.line_num}: close '
                            'it on its own line or remove it.')
    if any(f.strip() for f in fields):
      records.append((start, fields))


def _parse_row(path: str, line: int, columns: list[str], fields: list[str], file_split: Optional[str]):
  """The row as an Annotation, or a BadRow saying what is wrong with it."""
  def bad(reason, detail, split=''):
    return BadRow(path, line, reason, detail, split)
  if len(fields) != len(columns):
    reason = 'short row' if len(fields) < len(columns) else 'long row'
    return bad(reason, f'{len(fields)} fields where the header has {len(columns)}')
  row = {c: v.strip() for c, v in zip(columns, fields)}
  split_value = row.get('split', '')
  split = SPLIT_ALIASES.get(split_value.lower(), file_split)
  if split is None:
    return bad('unknown split', f'split "{split_value}" is none of {", ".join(sorted(SPLIT_ALIASES))}')
  if not row['youtube_id']:
    return bad('no youtube_id', 'the youtube_id field is empty', split)
  if not row['label']:
    return bad('no label', 'the label field is empty (an unlabelled clip can be neither trained nor scored on)',
               split)
  times = []
  for column in ('time_start', 'time_end'):
    value = row.get(column, '0')
    try:
      number = float(value)
    except ValueError:
      number = math.nan
    if not (math.isfinite(number) and number >= 0):
      return bad('bad number', f'{column} "{value}" is not a number of seconds >= 0', split)
    times.append(number)
  return Annotation(video_id(row['youtube_id'], *times), row['youtube_id'], row['label'], split)
