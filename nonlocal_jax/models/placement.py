"""Where the non-local blocks go: per stage, the indices of the residual blocks after which one is inserted.

A placement is a tuple with one tuple of block indices (0-based) per residual stage, res2 first. It can be given
as a named preset (the paper's experiments), a string such as ``'res3:1,3;res4:1,3,5'``, a mapping
``{'res3': (1, 3), 'res4': (1, 3, 5)}`` or the per-stage tuple itself. Presets (docs/paper.md §3):

    'none'                    no non-local block
    '1'                       one block in res4, just before its last residual block (R50: after res4 block 4)
    '5'                       R50: res3 blocks 1, 3 and res4 blocks 1, 3, 5; R101: res3 1, 3 and res4 6, 13, 20
    '10'                      R50: every residual block of res3 and res4
    'res2' ... 'res5'         one block before the last residual block of that stage (Table 2b)

'5' and '10' are defined for the R50 (3, 4, 6, 3) and R101 (3, 4, 23, 3) stage sizes only; the paper and the
official code give no 10-block placement for R101, so '10' with R101 asks for an explicit placement.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

PRESETS = ('none', '1', '5', '10', 'res2', 'res3', 'res4', 'res5')
R50_STAGES = (3, 4, 6, 3)
R101_STAGES = (3, 4, 23, 3)

# (preset, stage sizes) -> {stage number: block indices}; the official code's NONLOCAL.LAYER_MOD rule.
_FIXED_PRESETS = {
    ('5', R50_STAGES): {3: (1, 3), 4: (1, 3, 5)},
    ('5', R101_STAGES): {3: (1, 3), 4: (6, 13, 20)},
    ('10', R50_STAGES): {3: (0, 1, 2, 3), 4: (0, 1, 2, 3, 4, 5)},
}

Placement = Tuple[Tuple[int, ...], ...]


def _stage_number(key: Any, num_stages: int) -> int:
  """'res3' or 3 -> 3, checked against the stages res2 .. res{num_stages + 1}."""
  text = str(key).strip()
  number = text[3:] if text.startswith('res') else text
  allowed = [f'res{k}' for k in range(2, num_stages + 2)]
  if not number.isdigit() or not 2 <= int(number) <= num_stages + 1:
    raise ValueError(f'nonlocal_locations names an unknown stage {key!r}; the stages are {allowed}.')
  return int(number)


def _parse_string(spec: str, num_stages: int) -> dict:
  """'res3:1,3;res4:1,3,5' -> {3: (1, 3), 4: (1, 3, 5)}."""
  stages = {}
  for part in filter(None, (p.strip() for p in spec.split(';'))):
    if ':' not in part:
      raise ValueError(f'nonlocal_locations {spec!r} is neither a preset {PRESETS} nor of the form '
                       "'res3:1,3;res4:1,3,5' (stage, colon, block indices; stages separated by ';').")
    stage, indices = part.split(':', 1)
    try:
      stages[_stage_number(stage, num_stages)] = tuple(int(i) for i in indices.split(',') if i.strip())
    except ValueError as e:
      if 'unknown stage' in str(e):
        raise
      raise ValueError(f'nonlocal_locations {spec!r}: block indices must be integers, as in '
                       "'res3:1,3;res4:1,3,5'.") from None
  return stages


def _preset(name: str, stage_sizes: Tuple[int, ...]) -> dict:
  """The placement of a named preset for these stage sizes."""
  if name == 'none':
    return {}
  if name in ('5', '10'):
    fixed = _FIXED_PRESETS.get((name, stage_sizes))
    if fixed is None:
      known = 'R50 (3, 4, 6, 3)' + (' and R101 (3, 4, 23, 3)' if name == '5' else '')
      raise ValueError(f"The nonlocal_locations preset {name!r} is defined for {known} stage sizes only (the paper "
                       f'gives no other), not {stage_sizes}; give the placement per stage instead, e.g. '
                       "'res3:1,3;res4:1,3,5'.")
    return fixed
  stage = 4 if name == '1' else int(name[3:])
  if stage - 2 >= len(stage_sizes):
    raise ValueError(f'The nonlocal_locations preset {name!r} needs a stage res{stage}, but this network has '
                     f'only res2 .. res{len(stage_sizes) + 1}; choose another preset.')
  blocks = stage_sizes[stage - 2]
  if blocks < 2:
    raise ValueError(f'The nonlocal_locations preset {name!r} puts a block before the last residual block of '
                     f'res{stage}, which has only {blocks}; give the placement per stage instead.')
  return {stage: (blocks - 2,)}


def resolve_nonlocal_locations(spec: Any, stage_sizes: Sequence[int]) -> Placement:
  """Returns the placement (one sorted tuple of block indices per stage, res2 first) described by ``spec``.

  Args:
    spec: None, a preset name from ``PRESETS``, a string 'res3:1,3;res4:1,3,5', a mapping from stage ('res3'
      or 3) to indices, or a sequence with one sequence of indices per stage.
    stage_sizes: number of residual blocks in each stage, res2 first.

  Raises:
    ValueError: for an unknown preset or stage, a preset that does not fit ``stage_sizes``, or an index
      outside its stage.
  """
  stage_sizes = tuple(int(n) for n in stage_sizes)
  num_stages = len(stage_sizes)
  if spec is None:
    stages = {}
  elif isinstance(spec, str):
    stages = _preset(spec, stage_sizes) if spec in PRESETS else _parse_string(spec, num_stages)
  elif isinstance(spec, Mapping) or hasattr(spec, 'items'):
    stages = {_stage_number(k, num_stages): tuple(v) for k, v in spec.items()}
  elif isinstance(spec, Sequence):
    if len(spec) != num_stages:
      raise ValueError(f'nonlocal_locations needs one sequence of block indices per stage ({num_stages} '
                       f'for res2 .. res{num_stages + 1}), got {len(spec)}: {spec!r}.')
    stages = {k + 2: tuple(v) for k, v in enumerate(spec)}
  else:
    raise ValueError(f'nonlocal_locations must be a preset {PRESETS}, a string like \'res3:1,3;res4:1,3,5\', a '
                     f'mapping or a per-stage sequence; got {spec!r}.')
  placement = []
  for k, blocks in enumerate(stage_sizes):
    indices = tuple(sorted(set(int(i) for i in stages.get(k + 2, ()))))
    bad = [i for i in indices if not 0 <= i < blocks]
    if bad:
      raise ValueError(f'nonlocal_locations puts a block after residual block(s) {bad} of res{k + 2}, which has '
                       f'blocks 0 .. {blocks - 1} only.')
    placement.append(indices)
  return tuple(placement)
