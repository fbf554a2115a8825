"""A web page for deblurring photos: `python -m ifan_jax.app --ckpt=PATH [--port=7860]`.

Needs the optional extra `pip install ".[app]"` (Gradio). Modules, one role each:
  * `service`: one request without the web (read the upload, deblur, write the full-resolution
    result in the input's format and bit depth, previews, crop, defocus map);
  * `examples`: the built-in example photos (scikit-image's, defocused by the synthetic renderer);
  * `page`: the Gradio page and its one-at-a-time queue;
  * `cli`: the command line (`python -m ifan_jax.app` runs `cli.run`).
"""

from ifan_jax.app.cli import main

__all__ = ["main"]
