"""The model families infinipot knows: one entry each.

Adding a family = one adapter module (infinipot.adapters.*) + one entry here; its shipped
presets (presets/*.yaml) and its tiny random checkpoint builder hang off this entry. Entries
name their code by import path, so listing families (the CLI's --help, presets) imports no
model code (docs/design.md, "Adding a family").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infinipot.errors import InfinipotError

if TYPE_CHECKING:
    from infinipot.adapters.base import Adapter


@dataclass(frozen=True)
class Family:
    name: str  # transformers' model_type
    label: str  # how people call it
    adapter: str  # "module:Class" of its Adapter
    tiny_builder: str  # "module:function(out_dir)" building a tiny random checkpoint with the real classes
    tiny_preset: str  # the shipped preset that uses that checkpoint

    def adapter_class(self) -> type[Adapter]:
        return _load(self.adapter)

    def build_tiny(self, out_dir) -> None:
        _load(self.tiny_builder)(out_dir)


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("qwen2_5_vl", "Qwen2.5-VL", "infinipot.adapters.qwen:Qwen25VLAdapter",
           "infinipot.tiny:build_tiny_qwen2_5_vl", "tiny"),
    Family("qwen2_vl", "Qwen2-VL", "infinipot.adapters.qwen:Qwen2VLAdapter",
           "infinipot.tiny:build_tiny_qwen2_vl", "tiny-qwen2-vl"),
    Family("qwen3_vl", "Qwen3-VL", "infinipot.adapters.qwen3_vl:Qwen3VLAdapter",
           "infinipot.tiny_qwen3_vl:build_tiny_qwen3_vl", "tiny-qwen3-vl"),
    Family("llava_onevision", "LLaVA-OneVision", "infinipot.adapters.llava:OneVisionAdapter",
           "infinipot.tiny:build_tiny_llava_onevision", "tiny-llava-onevision"),
    Family("llava_next_video", "LLaVA-NeXT-Video", "infinipot.adapters.llava:NextVideoAdapter",
           "infinipot.tiny:build_tiny_llava_next_video", "tiny-llava-next-video"),
)}


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise InfinipotError(f"unknown `family` {name!r}: choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
