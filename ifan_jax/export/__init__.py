"""IFAN beyond Python: the ONNX export (`onnx.py`) and the static web page writer (`site.py`).

    python -m ifan_jax.export --ckpt=IFAN.pytorch --output=ifan.onnx [--tile=512] [--overlap=64]
    python -m ifan_jax.export --ckpt=IFAN.pytorch --web=site      # the page, its runtime, the model

    from ifan_jax.export import export_onnx, export_onnx_bytes
    metadata = export_onnx("IFAN.pytorch", "ifan.onnx")

The export needs the `export` extra (`pip install .[export]`: jax2onnx, onnx, onnxruntime); the
core install does not. See docs/export.md for the interface and the measured parity.
"""

from ifan_jax.export.onnx import (
    METADATA_KEYS,
    ExportError,
    export_estimator,
    export_estimator_bytes,
    export_model,
    export_onnx,
    export_onnx_bytes,
    read_metadata,
    source_sha256,
)

__all__ = ["METADATA_KEYS", "ExportError", "export_estimator", "export_estimator_bytes",
           "export_model", "export_onnx", "export_onnx_bytes", "read_metadata", "source_sha256"]
