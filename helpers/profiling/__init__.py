"""Module 1.6, profiling quantized models: torch.profiler traces read back as data (`trace`), TensorBoard
histograms written and read back (`tensorboard`), and the CUDA occupancy formula (`occupancy`)."""
