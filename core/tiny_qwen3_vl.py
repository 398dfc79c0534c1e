"""A tiny random Qwen3-VL, built locally with the family's real classes (see infinipot.tiny).

What makes it a Qwen3-VL and not a smaller Qwen2.5-VL: `Qwen3VLProcessor` (timestamps as text
before every temporal patch) with `Qwen3VLVideoProcessor` at patch 16 (a merged token is 32 x 32
pixels), a byte-level BPE tokenizer that splits digits like Qwen's, interleaved M-RoPE
(`mrope_section` [4, 2, 2] over 8 frequencies, θ 5e6, as the real [24, 20, 20] over 64), and
DeepStack: three vision layers feed the first three of the four decoder layers, so one decoder
layer receives none. Frames of 84 x 112 pixels give 3 x 4 merged tokens a temporal patch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infinipot.tiny import CORPUS, QWEN_MESSAGES, QWEN_SPECIAL_TOKENS

# The per-frame pixel limits (the processor's `size`, read per frame as qwen-vl-utils does):
# 2 x 2 to 4 x 4 merged tokens of 32 x 32 pixels.
MIN_PIXELS, MAX_PIXELS = 64 * 64, 128 * 128

# The Qwen3-VL chat format, reduced to what a video question needs (no default system prompt,
# like the real template); the video is the usual vision-start, video pad, vision-end triple.
QWEN3_VL_CHAT_TEMPLATE = "{% for message in messages %}" + QWEN_MESSAGES

# Timestamps are in every prompt: let " seconds" be one token, as in Qwen's vocabulary.
TIMESTAMP_CORPUS = [f"<{t / 2:.1f} seconds>" for t in range(0, 40, 3)] + ["a few seconds, many seconds"]


def _tokenizer():
    """Qwen2Tokenizer (Qwen's pre-tokenizer: one digit a token) over a BPE trained on the tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    trained.train_from_iterator((CORPUS + TIMESTAMP_CORPUS) * 4, trainer=trainer)
    tokenizer = Qwen2Tokenizer(tokenizer_object=trained, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tokenizer


def _processor():
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=MIN_PIXELS,
                                              max_pixels=MAX_PIXELS),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                              size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}),
        tokenizer=_tokenizer(),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def _config(tokenizer):
    from transformers import Qwen3VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True,
                         "rope_theta": 5_000_000.0},
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=256,
                  deepstack_visual_indexes=[0, 1, 2])
    return Qwen3VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )


def build_tiny_qwen3_vl(out_dir: Path) -> None:
    from transformers import Qwen3VLForConditionalGeneration

    processor = _processor()
    config = _config(processor.tokenizer)
    torch.manual_seed(0)
    Qwen3VLForConditionalGeneration(config).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
