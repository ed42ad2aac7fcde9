"""Measuring a graph on a device: the timing loop, agents, Ray nodes and the store."""
