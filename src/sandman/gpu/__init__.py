"""GPUs: NVIDIA's MIG geometry, inventories (NVML, simulated) and the placement planner."""
