"""IQPFR's image-quality prior as an optional plug-in to DAEFR (``../shared/papers/002_*``).

- :mod:`daefr.quality.scorer`: the NR-IQA scorer interface (images in [-1, 1] -> score in [0, 1])
  and ``build_scorer`` ("brisque" offline, or a learned network from a weight file).
- :mod:`daefr.quality.prior`: the conditioned part of the model (HQ+ codebook, score
  conditioning of the code transformer, second code head, fusion of the two lookups).
- :mod:`daefr.quality.checkpoint`: loading a conditioned checkpoint with its own strict keys.
- :mod:`daefr.quality.sweep`: NR-IQA score of the output for several conditions ``S``.
"""
