"""Training of DAEFR's three stages: codebook, association, fusion (paper Sec. 3).

Modules, one job each: ``config`` (frozen configs with the paper's defaults), ``data``
(face folders paired with their degradation), ``autoencoder`` (the VQGAN of one branch),
``losses``, ``branches`` (the two VQGAN branches of stages 1 and 2), ``fusion`` (stage 3),
``assemble`` (stage outputs -> the official DAEFR key layout), ``state`` (checkpoints),
``distributed`` (torchrun/DDP), ``precision`` (AMP), ``metrics`` (JSONL/TensorBoard),
``loop`` (the step loop shared by all stages) and ``runner`` (one stage end to end).
"""
