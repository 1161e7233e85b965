"""What ships to a device, and the code that builds and runs it.

- :mod:`~autocompress.deploy.export`: one policy → ``model.onnx`` (raw input in, normalisation inside the graph),
  verified against PyTorch.
- :mod:`~autocompress.deploy.adaptive`: several configurations of one run → an adaptive package.
- :mod:`~autocompress.deploy.manifest`: the package's typed, versioned manifest (``manifest.json``); the builder
  writes it and the runtime reads it with the same code.
- :mod:`~autocompress.deploy.shared_weights`: configurations of one union model sharing one weight store.
- :mod:`~autocompress.deploy.runtime`: the on-device runtime (numpy and onnxruntime only).
- :mod:`~autocompress.deploy.simulate`: replays a context trace through a package.

This ``__init__`` imports nothing, so ``import autocompress.deploy.runtime`` on a device stays light.
"""
