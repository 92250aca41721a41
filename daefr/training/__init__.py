"""Training of DAEFR's three stages: codebook, association, fusion (paper Sec. 3).

What is trained is what the original code (LIAGM/DAEFR at 02d5010) trains; the batch, lr and
lengths come from a recipe, the paper's or the released configs' (``config.RECIPES``).

Modules, one job each: ``config`` (frozen configs, stage defaults and recipes), ``data``
(face folders paired with their degradation), ``autoencoder`` (the VQGAN of one branch),
``losses``, ``branches`` (the two VQGAN branches of stages 1 and 2), ``fusion`` (stage 3),
``assemble`` (stage outputs -> the official DAEFR key layout), ``state`` (checkpoints),
``distributed`` (torchrun/DDP), ``precision`` (AMP), ``metrics`` (JSONL/TensorBoard),
``loop`` (the step loop shared by all stages) and ``runner`` (one stage end to end).
"""
