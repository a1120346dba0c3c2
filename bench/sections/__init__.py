"""One module per section of docs/benchmarks.md, registered by name in bench/run.py.

A section module has ``run(shared: Shared) -> Section`` and a Markdown file of the same
name beside it with the section's prose (read with ``Prose(__file__)``, see bench/prose.py).
"""
