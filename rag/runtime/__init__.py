"""Where the models run: this CPU (cpu), ONNX Runtime sessions and the export cache (onnx), the
tokenizers-only windowing (windows), and which runtime reads fastest here (choice)."""
