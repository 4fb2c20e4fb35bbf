r"""Non-local vs C2D on the multi-label synthetic benchmark (``synthetic_long_range/unpaired_digits``), on a CPU.

    python main.py --config=configs/synthetic_multilabel.py --workdir=/tmp/synthetic_ml_nl
    python main.py --config=configs/synthetic_multilabel.py:blocks=none --workdir=/tmp/synthetic_ml_c2d   # C2D

The multi-label path end to end: per-class sigmoid cross-entropy (chosen from the dataset's multi-hot labels),
hit@1 in the console lines, mean average precision over classes at the test (``nonlocal_jax.evaluation``). Each
4-frame clip shows one digit in each frame; a first-half digit (frames 0, 1) comes back in the second half
(frames 2, 3: the same image, elsewhere, under other noise) with probability 1/2, and the label holds the digit
classes seen in one half only (``nonlocal_jax.data.synthetic``). The 8x8 stem's temporal pool of 2 keeps the two
halves apart until the global pool, so a C2D network can only add up a term per half, which cannot compute such an
exclusive or; a non-local block relates the halves. The dataset (20,000 train, 2,000 test clips of 4×24×24, 16×16
digits, noise 10, no distractor strokes) is generated into ``data.data_dir`` on first use; nothing is downloaded.

Model and recipe: those of configs/synthetic_nl.py (a tiny C2D ResNet of width 12, blocks after res3 and res4,
He-initialised blocks with tied theta/phi, AdamW with a cosine schedule), with 10 sigmoid outputs and 5,000 steps.
Arguments: ``blocks=none|res3|res4|res3res4``.

Both variants, three seeds each, as a sweep (results.md: mAP and top-1 mean ± sd; 6 runs of ~10 minutes on 2 cores):

    python -m nonlocal_jax.sweep --config=configs/synthetic_multilabel.py --workdir=/tmp/synthetic_ml --seeds=0,1,2

Expected: see the README's multi-label paragraph.
"""

from nonlocal_jax.config_files import load_sibling, parse_arg

BLOCKS = load_sibling(__file__, 'synthetic_nl').BLOCKS


def get_config(arg=None):
  """The multi-label synthetic config; ``arg`` 'blocks=none' gives the C2D baseline."""
  blocks = parse_arg(arg, {'blocks': {b: b for b in BLOCKS}}, 'configs/synthetic_multilabel.py').get('blocks',
                                                                                                      'res3res4')
  config = load_sibling(__file__, 'synthetic_nl').get_config(f'blocks={blocks}')
  config.model.num_classes = 10
  d = config.data
  d.name = 'synthetic_long_range/unpaired_digits'
  # The same clips as synthetic_nl's (4 frames of 24x24, 16x16 digits), one digit in every frame; 'same' is a
  # same_different setting, left at its default so that it does not rename the generated variant.
  d.synthetic.same = 'class'
  t = config.train
  t.num_steps, t.checkpoint_every_steps = 5000, 1000
  return config


def get_sweep(arg=None):
  """C2D (no non-local block) against the non-local network (blocks after res3 and res4)."""
  del arg  # One sweep: the two networks of the argument's choices that the README compares.
  return [{'name': 'c2d', 'label': 'C2D', 'model.nonlocal_locations': BLOCKS['none']},
          {'name': 'nl', 'label': 'NL C2D (res3, res4)'}]
