"""Frozen, validated configs for DAEFR and its presets ("official", "tiny").

Letters used throughout: B batch, C channels, H W spatial, N = H*W tokens, K codebook size,
D code dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


def _require(condition: bool, name: str, value: object, allowed: str) -> None:
    if not condition:
        raise ValueError(f"invalid config: {name}={value!r}; {allowed}")


@dataclass(frozen=True)
class VQGANConfig:
    """The taming/RestoreFormer-style VQGAN shared by the LQ and HQ branches."""

    resolution: int = 512
    in_channels: int = 3
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    attn_heads: int = 1
    z_channels: int = 256
    codebook_size: int = 1024  # K
    code_dim: int = 256  # D
    norm_groups: int = 32

    def __post_init__(self) -> None:
        levels = len(self.ch_mult)
        _require(levels >= 1, "ch_mult", self.ch_mult, "needs at least one level")
        _require(
            self.resolution % 2 ** (levels - 1) == 0,
            "resolution",
            self.resolution,
            f"must be divisible by 2**(len(ch_mult)-1) = {2 ** (levels - 1)}",
        )
        for name in ("ch", "z_channels", "code_dim"):
            value = getattr(self, name)
            _require(
                value % self.norm_groups == 0,
                name,
                value,
                f"must be a multiple of norm_groups={self.norm_groups}",
            )
        _require(self.num_res_blocks >= 1, "num_res_blocks", self.num_res_blocks, "must be >= 1")
        _require(self.codebook_size >= 2, "codebook_size", self.codebook_size, "must be >= 2")
        _require(
            self.attn_heads >= 1 and (self.ch * self.ch_mult[-1]) % self.attn_heads == 0,
            "attn_heads",
            self.attn_heads,
            "must divide the channels at the attention resolution",
        )

    @property
    def latent_size(self) -> int:
        """Side of the latent grid (16 for the official model)."""
        return self.resolution // 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class QualityConfig:
    """IQPFR's quality-conditioned plug-in (``daefr.quality``); absent from a plain DAEFR.

    ``hq_plus_size``: K+ of the HQ+ codebook (code dim D as the common one); ``threshold``:
    S_thr, the NR-IQA score above which a training face teaches the HQ+ codebook;
    ``embed_dim``: Fourier features of the score S fed to the transformer's conditioning.
    """

    hq_plus_size: int = 1024
    threshold: float = 0.8
    embed_dim: int = 32

    def __post_init__(self) -> None:
        _require(self.hq_plus_size >= 2, "quality.hq_plus_size", self.hq_plus_size, "must be >= 2")
        _require(0.0 < self.threshold < 1.0, "quality.threshold", self.threshold, "must be in (0, 1)")
        _require(
            self.embed_dim >= 2 and self.embed_dim % 2 == 0,
            "quality.embed_dim",
            self.embed_dim,
            "must be an even number >= 2",
        )


@dataclass(frozen=True)
class DAEFRConfig:
    """The whole inference network: two encoders, MHCA, code-prediction transformer, decoder.

    ``training_modules`` adds the parts that only training uses (``Fixed_encoder``,
    ``Fixed_quant_conv``, ``HQ_quantize``, ``LQ_quantize``) so that a full official state_dict
    (877 tensors) loads with ``strict=True``; without them the model holds the 703 inference
    tensors. ``quality`` adds IQPFR's conditioned part (``iqp.*`` keys, after all others);
    ``None`` is the plain DAEFR.
    """

    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    fusion_heads: int = 8  # MHCA heads over code_dim channels
    transformer_dim: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 9
    transformer_ffn: int = 1024
    training_modules: bool = False
    quality: QualityConfig | None = None

    def __post_init__(self) -> None:
        _require(
            self.vqgan.z_channels % self.fusion_heads == 0,
            "fusion_heads",
            self.fusion_heads,
            f"must divide z_channels={self.vqgan.z_channels}",
        )
        _require(
            self.transformer_dim % self.transformer_heads == 0,
            "transformer_heads",
            self.transformer_heads,
            f"must divide transformer_dim={self.transformer_dim}",
        )
        _require(self.transformer_layers >= 1, "transformer_layers", self.transformer_layers, ">= 1")
        _require(self.transformer_ffn >= 1, "transformer_ffn", self.transformer_ffn, ">= 1")

    @property
    def num_tokens(self) -> int:
        """N, tokens per face (256 for the official model)."""
        return self.vqgan.latent_size**2

    @classmethod
    def from_name(cls, name: str, **overrides: object) -> DAEFRConfig:
        """A named preset ("official" or "tiny"), with optional field overrides."""
        try:
            preset = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return replace(preset, **overrides) if overrides else preset


PRESETS: dict[str, DAEFRConfig] = {
    # configs/DAEFR.yaml of the original release.
    "official": DAEFRConfig(),
    # Small enough for CPU tests: 64x64 input, still a 16x16 latent (256 tokens).
    "tiny": DAEFRConfig(
        vqgan=VQGANConfig(
            resolution=64,
            ch=32,
            ch_mult=(1, 1, 2),
            num_res_blocks=1,
            attn_resolutions=(16,),
            z_channels=32,
            codebook_size=64,
            code_dim=32,
        ),
        fusion_heads=4,
        transformer_dim=64,
        transformer_heads=4,
        transformer_layers=2,
        transformer_ffn=128,
    ),
}
