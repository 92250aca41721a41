"""daefr.runtime: restorer backends behind one contract (``backends``: torch, ort, trt), faces
in real frames (``face``), whole photos (``photo``), videos (``video``, ``daefr-video``) and
their benchmark (``bench``, ``daefr-bench video``).

Nothing is imported here so that each part loads only what it needs (PyAV, OpenCV, ONNX
Runtime, TensorRT).
"""
