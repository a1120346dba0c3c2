"""Engines: where and how concurrently a run's items are segmented.

The protocol (base.py), one engine per module (local.py, processes.py with its dispatcher,
worker pool and worker processes, ray.py), and the registry that names them and picks one
(registry.py).
"""
