"""Every tolerance of the training tests, with the reason for its size."""

# Blur: moments of a blurred impulse equal the kernel's; only float32 FFT rounding remains.
IMPULSE_SIGMA_RTOL = 0.01
IMPULSE_THETA_ATOL = 0.02  # radians
# Edge through the whole pipeline: 8-bit rounding and JPEG q=100 perturb the edge profile.
EDGE_SIGMA_RTOL = 0.10
# Noise: std of 196,608 samples; the standard error is ~0.02 (0..255 scale), clipping none.
NOISE_SIGMA_ATOL = 0.25
# Training on a fixed batch: mean of the last steps at most this fraction of the first steps'.
LOSS_DROP = 0.9
# Resume vs uninterrupted: same ops in the same order on the CPU; allow only rounding noise.
RESUME_RTOL = 1e-5
