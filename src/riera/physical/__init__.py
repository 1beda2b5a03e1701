"""The physical plan: the planner cuts a logical plan into stages (reader, fused operators,
writer), and the operators and kernels those stages run. Below the executors, which only run
stages, and above the exchange, which only stores tables."""
