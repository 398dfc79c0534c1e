"""Tiny random checkpoints, built locally, so the whole pipeline runs without downloading weights.

The `tiny` presets and the test suite use these. Each checkpoint is a real model class of its
family with random weights (hidden size 64, 2 layers, 4 heads, 2 KV heads, a 1-layer vision
tower), a small BPE tokenizer trained here, the family's real processor classes and a chat
template in the family's format, saved with `save_pretrained` and loaded back through the same
path a user's preset takes. Its answers are noise; its shapes and code paths are real.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

BUILDER_VERSION = 1  # bump when a builder changes, so cached checkpoints are rebuilt

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Each message of the Qwen chat formats (Qwen2-VL to Qwen3-VL), reduced to what a video question
# needs, and the end of the loop over messages; a template opens the loop before it.
QWEN_MESSAGES = (
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The Qwen2-VL / Qwen2.5-VL chat format: a default system prompt, then the messages.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}" + QWEN_MESSAGES
)

CORPUS = [
    "What happened in the video? Describe the scene in detail.",
    "A red square moves across a textured background from left to right.",
    "The person walks into the room, opens the door and sits down at the table.",
    "How many objects are visible? What color is the car? Where does it go?",
    "You are a helpful assistant. Answer the question about the video briefly.",
    "system user assistant video image frame second minute hour first last",
    "0 1 2 3 4 5 6 7 8 9 A B C D E yes no left right up down start end",
]


def _train_tokenizer(special_tokens: list[str]):
    """A byte-level BPE tokenizer (a few hundred tokens) with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tokenizer


def _qwen_processor(processor_cls):
    from transformers import Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = Qwen2Tokenizer(
        tokenizer_object=_train_tokenizer(QWEN_SPECIAL_TOKENS),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    # Small frames keep the tiny model fast: at most 4x4 merged tokens (112x112 pixels) a frame.
    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 112 * 112}
    return processor_cls(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def _qwen_config(config_cls, tokenizer, tokens_per_second: int | None):
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIAL_TOKENS}
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    if tokens_per_second is not None:  # Qwen2.5-VL: window attention and out_hidden_size
        vision.update(out_hidden_size=64, window_size=56, fullatt_block_indexes=[0],
                      tokens_per_second=tokens_per_second)
    else:  # Qwen2-VL
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    return config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def build_tiny_qwen2_5_vl(out_dir: Path) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    processor = _qwen_processor(Qwen2_5_VLProcessor)
    config = _qwen_config(Qwen2_5_VLConfig, processor.tokenizer, tokens_per_second=2)
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_tiny_qwen2_vl(out_dir: Path) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    processor = _qwen_processor(Qwen2VLProcessor)
    config = _qwen_config(Qwen2VLConfig, processor.tokenizer, tokens_per_second=None)
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


# --- LLaVA-OneVision (Qwen2 text, SigLIP vision) and LLaVA-NeXT-Video (Llama text, CLIP vision) -------

# llava-hf/llava-onevision-qwen2-*-ov-hf's format: "<|im_start|>user <video>\nQ<|im_end|><|im_start|>assistant\n".
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# llava-hf/LLaVA-NeXT-Video-7B-hf's (Vicuna) format: "USER: <video>\nQ ASSISTANT:", after a BOS token.
NEXT_VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

LLAVA_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False)
LLAVA_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=14)


def _llama_tokenizer():
    """A Llama-style tokenizer (Metaspace, byte fallback, BOS added) with LLaVA's <video>/<image> tokens.

    Its BOS and its "no ▁ after a special token" rule are what a prompt split by hand gets wrong,
    so the tiny model keeps them.
    """
    import json
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    alphabet = sorted(set(string.printable) - set(" \t\r\x0b\x0c")) + ["▁"]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=alphabet, show_progress=False)
    trained.train_from_iterator(CORPUS * 4, trainer=trainer)
    model = json.loads(trained.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{byte:02X}>": 3 + byte for byte in range(256)}
    for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[tuple(pair) for pair in model["merges"]], add_bos_token=True)
    tokenizer.add_tokens(["<video>", "<image>"], special_tokens=True)
    tokenizer.pad_token = "<unk>"
    return tokenizer


def build_tiny_llava_onevision(out_dir: Path) -> None:
    """SigLIP at 70x70 (5x5 patches), pooled to ceil(5/2) = 3x3 = 9 tokens a frame, then one image_newline."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor,
                              Qwen2Tokenizer)

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tokenizer = Qwen2Tokenizer(tokenizer_object=_train_tokenizer(special), unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    size, pinpoints = {"height": 70, "width": 70}, [[70, 70], [70, 140], [140, 70], [140, 140]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tokenizer,
        num_image_tokens=25, vision_feature_select_strategy="full", chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in special}
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), bos_token_id=None,
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], **LLAVA_TEXT),
        vision_config=dict(model_type="siglip_vision_model", image_size=70, vision_use_head=False, **LLAVA_VISION),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="full", tie_word_embeddings=False,
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(0)
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_tiny_llava_next_video(out_dir: Path) -> None:
    """CLIP at 112x112 (8x8 patches + CLS, CLS dropped), average-pooled by 2 to 4x4 = 16 tokens a frame."""
    from transformers import (LlavaNextImageProcessor, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                              LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor)

    tokenizer = _llama_tokenizer()
    size, crop, pinpoints = {"shortest_edge": 112}, {"height": 112, "width": 112}, [[112, 224], [224, 112]]
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size=size, crop_size=crop),
        image_processor=LlavaNextImageProcessor(size=size, crop_size=crop, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer, chat_template=NEXT_VIDEO_CHAT_TEMPLATE, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in ("<s>", "</s>", "<unk>", "<image>", "<video>")}
    config = LlavaNextVideoConfig(
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), bos_token_id=ids["<s>"],
                         eos_token_id=ids["</s>"], pad_token_id=ids["<unk>"], **LLAVA_TEXT),
        vision_config=dict(model_type="clip_vision_model", image_size=112, projection_dim=32, **LLAVA_VISION),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="default", spatial_pool_stride=2,
        image_seq_length=64, video_seq_length=16, tie_word_embeddings=False,
        bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<unk>"],
    )
    torch.manual_seed(0)
    LlavaNextVideoForConditionalGeneration(config).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def cache_root() -> Path:
    """Where tiny checkpoints live: $INFINIPOT_CACHE, else $XDG_CACHE_HOME/infinipot, else ~/.cache/infinipot."""
    if env := os.environ.get("INFINIPOT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "infinipot"


def ensure_tiny_checkpoint(family: str, root: Path | None = None) -> Path:
    """The directory of the tiny `family` checkpoint, building it on first use (a few seconds)."""
    from infinipot.families import get_family

    builder = get_family(family).build_tiny
    root = root or cache_root()
    target = root / "tiny" / f"{family}-v{BUILDER_VERSION}"
    if (target / "config.json").is_file():
        return target
    logger.info("building tiny %s checkpoint in %s", family, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a crash never leaves a half-built checkpoint behind.
    scratch = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=target.parent))
    try:
        builder(scratch)
        os.replace(scratch, target)
    except OSError:
        if not (target / "config.json").is_file():  # lost a race with another process: theirs is fine
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
