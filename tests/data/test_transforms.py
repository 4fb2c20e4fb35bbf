"""The settings the frame operations read: a value that cannot work fails with the field's name."""

import pytest

from nonlocal_jax import data
from nonlocal_jax.data import layout as layout_lib
from tests.data.conftest import synthetic_config


def test_bad_config_values_name_the_field(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, crop_size=40)
  with pytest.raises(ValueError, match='config.data.crop_size'):
    data.create_train_iterator(c, seed=0, layout=layout_lib.ProcessLayout(0, 1, 1))
