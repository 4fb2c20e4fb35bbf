"""Official Caffe2 blob names of the models' variables: a one-to-one, purely mechanical mapping.

Every module of ``ResNetVideo`` and ``ResNetImage`` is named after the blob prefix of the official code
(facebookresearch/video-nonlocal-net), so a variable's Caffe2 name is its path joined by '_' with the leaf
renamed:

    kernel -> w    bias -> b    scale -> s    mean -> rm    var -> riv

    params/conv1/kernel                         conv1_w
    params/res_conv1_bn/scale                   res_conv1_bn_s
    batch_stats/res_conv1_bn/var                res_conv1_bn_riv
    params/res4_0/branch1/kernel                res4_0_branch1_w
    params/res3_1/branch2b_bn/bias              res3_1_branch2b_bn_b
    params/nonlocal_conv4_3/theta/kernel        nonlocal_conv4_3_theta_w
    batch_stats/nonlocal_conv4_3/bn/mean        nonlocal_conv4_3_bn_rm
    params/pred/kernel                          pred_w

The arrays differ only in layout: a conv kernel is (kT, kH, kW, C_in, C_out) here and (C_out, C_in, kT, kH, kW)
in Caffe2; a 1×1×1 conv of the non-local block and the classifier are (C_in, C_out) here and (C_out, C_in[, 1,
1, 1]) there. The weight conversion (``nonlocal_jax.convert``) does the transposes.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

LEAF_SUFFIXES = {'kernel': 'w', 'bias': 'b', 'scale': 's', 'mean': 'rm', 'var': 'riv'}


def caffe2_name(path: Sequence[str]) -> str:
  """The official blob name of the variable at ``path`` (module names then leaf, without the collection).

  Raises:
    ValueError: if the leaf is not one of ``LEAF_SUFFIXES``.
  """
  *modules, leaf = [str(p) for p in path]
  if leaf not in LEAF_SUFFIXES:
    raise ValueError(f'Variable {"/".join(path)} has no Caffe2 counterpart: its leaf must be one of '
                     f'{tuple(LEAF_SUFFIXES)}.')
  return '_'.join(modules + [LEAF_SUFFIXES[leaf]])


def caffe2_names(variables: Mapping) -> Dict[str, Tuple[str, ...]]:
  """Maps every Caffe2 blob name to the (collection, *path) of the variable it corresponds to.

  ``variables`` is what ``model.init`` returns (or its ``jax.eval_shape``); 'params' and 'batch_stats' are
  mapped, other collections ignored.
  """
  names = {}

  def walk(tree, prefix):
    for key, value in tree.items():
      if isinstance(value, Mapping):
        walk(value, prefix + (key,))
      else:
        names[caffe2_name(prefix[1:] + (key,))] = prefix + (key,)

  for collection in ('params', 'batch_stats'):
    if collection in variables:
      walk(variables[collection], (collection,))
  return names
