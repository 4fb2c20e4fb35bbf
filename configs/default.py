"""Default configuration: every field of every config, documented. Other configs start from this one.

Sections: ``model`` (the network, see ``nonlocal_jax.models``), ``data`` (the dataset and input pipeline, see
``nonlocal_jax.data``). Each section is built by its own function below so that it is documented in one place.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """The ``config.model`` section: which network and how it is built."""
  model = ml_collections.ConfigDict()
  return model


def data_config() -> ml_collections.ConfigDict:
  """The ``config.data`` section: which dataset, how clips are sampled, augmented and batched."""
  data = ml_collections.ConfigDict()
  return data


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration (every field at its documented default)."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Random seed for parameter initialisation, data order and dropout.
  config.model = model_config()
  config.data = data_config()
  return config
