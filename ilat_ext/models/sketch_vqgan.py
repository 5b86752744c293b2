"""The authors' released sketch VQGAN (iLAT, Cao et al. 2021, Sec. 4) as an ilat_ext VQModel.

`VQModel` with the release's sketch encoder and decoder (`ilat_ext.modules.sketch_coder`): what
`scripts/convert_release.py` builds for the `sketch_ffhq_V1` folder, so the converted sketch stage is an
ordinary condition stage (`cond_stage_config`) that `load_run`, editing and finetuning accept.
Quantiser, `quant_conv` / `post_quant_conv`, training and `encode` (3 values) are VQModel's.
"""
from ilat_ext.models.vqgan import VQModel
from ilat_ext.modules.sketch_coder import SketchDecoder, SketchEncoder


class SketchVQModel(VQModel):
    """VQModel's constructor; `ddconfig` describes the release's sketch coder (`SketchEncoder`).

    encode(x (B, 1, H, W)) -> (quant (B, embed_dim, h, w), codebook loss, (perplexity, one_hot,
    indices (B*h*w, 1))); decode(quant) -> (B, 1, H, W) in (-1, 1)."""

    encoder_cls = SketchEncoder
    decoder_cls = SketchDecoder
