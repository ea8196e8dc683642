"""What `charlm bench` measures: speed.py (training through the real loop and a bare PyTorch step,
evaluation, sampling, data preparation, peak memory) and malloc_ab.py (glibc's malloc against
charlm's memory reuse, in fresh processes)."""
