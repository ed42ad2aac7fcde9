"""What a graph is made of, as a runtime runs it: kernels, fusions, layouts and memory."""
