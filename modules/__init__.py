"""The video model: temporal heads (`heads`), class embeddings (`classifier`, tools `lda` and
`hf_text_embed`), `VideoCLIP` (`video_model`), `build_model` (`builder`, the only reader of
`cfg.network`) and checkpoint loading/conversion (`convert`). See docs/model.md.

Which module does what, and who calls it: docs/map.md.
"""
