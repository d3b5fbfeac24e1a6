"""Model tooling, kept out of the runtime ``models`` package: the build and conversion scripts of the
shipped ONNX artefacts, the model benchmark and the ``tryon`` command.

Workers never import this package; ``models`` (contract, registry, runner) is all they need.
"""
