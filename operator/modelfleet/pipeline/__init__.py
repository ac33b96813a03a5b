"""The worker pipeline: fetch -> export -> optimize -> quantize -> convert -> evaluate -> benchmark.

Heavy libraries (torch, onnx, onnxruntime, ncnn, LiteRT) are imported inside functions so
that importing modelfleet stays cheap for the operator.
"""
