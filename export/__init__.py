"""daefr.export: ONNX graphs, ORT parity, FP16 policy, TensorRT engines, manifest (``daefr-export``).

Modules: ``graphs`` (the exported boundaries), ``onnx_export``, ``precision`` (the FP16
policy), ``parity``, ``manifest``, ``trt_build`` and ``plugins`` (TensorRT, imported lazily),
``cli``. Importing this package never imports TensorRT, Triton or Polygraphy.
"""
