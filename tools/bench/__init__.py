"""Benchmarks of the node daemon against the real Ganeti noded and bare echo servers (`make bench`)."""
