"""nonlocal_jax: Non-local Neural Networks (Wang et al., CVPR 2018) in JAX and Flax."""

__version__ = '0.1.0'
