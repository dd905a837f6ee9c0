"""Whether a GPU stack fits together: NVIDIA's, PyTorch's and vLLM's version facts as tables with their
sources (`tables`), and the rules that judge a manifest or a lock by them (`rules`), before a byte is
downloaded or installed."""
