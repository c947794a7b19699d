"""The bottom layer: config, distributed set-up, checkpoints, the training and evaluation engines,
metrics and logging; it imports nothing of the project outside `utils/`.

Which module does what, and who calls it: docs/map.md.
"""
