"""Tolerances of the runtime tests, with the measurement behind each."""

from daefr.precision import quality_bar

# ORT CPU vs eager fp32, tiny preset, restored in [-1, 1]: measured max |diff| 9.4e-6
# (torch 2.13, onnxruntime 1.32). 10x headroom; code indices must be equal.
ORT_FP32_RESTORED_ATOL = 1e-4

# GPU eager fp16 vs fp32 (flash-attention rule): fp16 error at most 2x ... is measured by the
# precision work in daefr.export; here only a sanity bound on the restored image, decoded from
# the same codes (one flipped code moves its 4x4 pixels of the tiny preset by up to ~1.3).
TORCH_FP16_RESTORED_ATOL = 5e-2

# Reduced-precision code agreement: the one table (daefr.precision.QUALITY_BARS). Measured on
# the tiny preset's test faces: fp16 flipped 2 of 768 codes (99.7 %); TF32 convolutions
# (cuDNN's default) flipped 2 too.
FP16_CODE_AGREEMENT = quality_bar("fp16").code_agreement

# Alignment: the similarity fitted to the template itself is exact up to float64 round-off.
ALIGN_ATOL_PX = 1e-6

# Detection on skimage's astronaut: landmarks within this many pixels of hand-checked points.
LANDMARK_ATOL_PX = 6.0

# Segmented vs single-process output of the same lossy clip (libx264 crf 18): the parts are
# encoded with their own GOPs and rate control, so frames differ by about what one more x264
# encode at the same CRF changes: measured at most 1.26x that re-encode's mean |diff| per frame
# (32 frames, 256x192, 3 segments). With a lossless codec the frames are equal.
SEGMENTED_VS_REENCODE = 1.5

# The trained tiny asset (tests/data/tiny_trained, asset.json "margins"), on its 8 held-out faces
# (2048 tokens): median top1-top2 code logit 0.728 against seeded random weights' 0.207 (3.5x);
# the bar is well under it and far above 1.
TRAINED_MIN_MARGIN_RATIO = 2.0
# ... and not a head collapsed onto a few codes: measured 32 distinct codes chosen (of K = 64;
# random weights 51, a collapsed head 1).
TRAINED_MIN_CODES_USED = 16
