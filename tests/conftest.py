"""The tests compare float64 cells, so this process turns JAX's float64 on; Keras, a test
oracle, runs on the JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
