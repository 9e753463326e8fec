"""A tiny, randomly initialised SAM for tests: small image encoder, real prompt encoder/decoder.

The encoder is ViT-shaped like Meta's (1024 px input, 16 px patches, 64x64x256 embedding) but
with 2 blocks of width 64, so it builds and runs in well under a second on a CPU; the prompt
encoder and mask decoder have the real shapes, so decoder code paths are exercised for real.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from sam_engine.constants import IMG_SIZE, PIXEL_MEAN, PIXEL_STD

PROMPT_EMBED_DIM = 256
PATCH_SIZE = 16
IMAGE_EMBEDDING_SIZE = IMG_SIZE // PATCH_SIZE  # 64


def tiny_sam(seed: int = 0) -> Sam:
    """A deterministic (per seed) tiny SAM in eval mode; the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=IMG_SIZE,
                patch_size=PATCH_SIZE,
                embed_dim=64,
                depth=2,
                num_heads=2,
                mlp_ratio=4,
                out_chans=PROMPT_EMBED_DIM,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=14,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=PROMPT_EMBED_DIM,
                image_embedding_size=(IMAGE_EMBEDDING_SIZE, IMAGE_EMBEDDING_SIZE),
                input_image_size=(IMG_SIZE, IMG_SIZE),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8
                ),
                transformer_dim=PROMPT_EMBED_DIM,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=list(PIXEL_MEAN),
            pixel_std=list(PIXEL_STD),
        )
    return sam.eval()


def save_state_dict(sam: torch.nn.Module, path: str | Path) -> Path:
    """torch.save(sam.state_dict(), path) into a new folder if needed; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return path


def random_vit_t(seed: int = 0) -> Sam:
    """MobileSAM's vit_t (TinyViT encoder, real decoder) with random weights, and random values
    in what its initialisation leaves zero or identity (attention biases, BatchNorm statistics)
    so that those code paths count. Needs the `mobile` extra (mobile_sam)."""
    from mobile_sam import sam_model_registry

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = sam_model_registry["vit_t"]()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in sam.named_parameters():
                if "attention_biases" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            for m in sam.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return sam.eval()
