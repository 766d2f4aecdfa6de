"""Model file formats (Module 1.4). Import the module you need; this file imports nothing.

    gguf.py         GGUF from the bytes up: a reader for untrusted files (typed errors, memory-mapped tensors) and a writer
    gguf_quants.py  the block quantization formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K), decoded from their C layouts
    llama_cpp.py    finds and runs llama.cpp's tools (convert, quantize, generate, bench, perplexity) and reads their numbers
    onnx_export.py  torch -> ONNX with dynamic axes, ONNX Runtime sessions, dynamic INT8 quantization
"""
