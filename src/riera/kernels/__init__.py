"""Vectorized kernels over Arrow tables, shared by planning (type inference over empty tables) and
execution (the same functions over a partition). They import nothing above :mod:`riera.expr`."""
