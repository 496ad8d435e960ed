"""Fault injection on a replicating pair of real eventmail processes (`make chaos`)."""
