"""The tests compare float64 cells, so this process turns JAX's float64 on."""

import jax

jax.config.update("jax_enable_x64", True)
