"""The application layer: the set-up every entry point shares, above `datasets/` and `modules/`.

`weights` turns any weights file into a model (`load_model`); `eval_run` holds what test.py,
test_zeroshot.py and the tools share (arguments, processes, model, data, output folder); `lda`
is the LDA-classifier tool. Nothing below this layer imports it.

Which module does what, and who calls it: docs/map.md.
"""
