"""``daefr-serve``: the restorer behind a real Triton Inference Server (through PyTriton).

model.py    the ``daefr`` model: tensor specs and the request -> restorer -> response callable
server.py   the PyTriton server around it (ports, batching, shutdown)
cli.py      ``daefr-serve`` flags; the one place a restorer is built from them
client.py   tritonclient helpers (HTTP/gRPC requests, readiness, Prometheus counts)
launch.py   a ``daefr-serve`` child process for tests and ``daefr-bench serve``

PyTriton pins numpy<2, so the server runs from its own environment (``.venv-serve``, made by
``scripts/setup.sh``); clients only need ``tritonclient`` and work with numpy 2.
"""
