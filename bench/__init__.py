"""Benchmarks: the queue beside pgqueuer, the pipeline beside a bare onnxruntime loop, latency, scale,
memory and enqueue rate, measured side by side in one run (``stayler bench``, docs/benchmarks.md)."""
