"""Profiling a device: the graphs to measure, and checks of what it measures."""
