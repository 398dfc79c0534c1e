"""Exact re-rotation of post-RoPE keys: move a cached key from one rotary position to another.

Keys sit in the cache after RoPE. RoPE turns each pair of key dimensions (d, d + half) by the
angle position * inv_freq[d] (the rotate_half convention of transformers' Llama, Qwen2 and
Qwen2-VL code), so a key made at position p becomes the key the model would make at q by one
more rotation through the angle difference; no pre-RoPE copy of the cache is needed (docs/design.md, "Positions").

Three details make it exact rather than nearly so:
- The model rounds every angle to float32 (fl(p * inv_freq)); at p ~ 1e4 that rounding is
  ~1e-3 rad, so turning by fl((q - p) * inv_freq) lands visibly off the model's own key at q.
  We turn by fl(q * inv_freq) - fl(p * inv_freq), the difference of the model's own angles,
  with its cos and sin taken in float64 (on the CPU for MPS, which has no float64).
- A rope type's `attention_scaling` (yarn's, for one) multiplies cos and sin once, when the key
  is made. A turn must not apply it again, so the delta rotation is a pure rotation.
- M-RoPE (Qwen2-VL, Qwen2.5-VL) drives each frequency by one position axis: `mrope_section`
  splits the half dimension into temporal, height and width sections, and each section turns by
  its own axis' delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infinipot.errors import InfinipotError
from infinipot.positions import dense_positions, packed_positions

# Rope types whose frequencies change with the sequence length: a stored key's angle cannot be
# recomputed from its position alone, so its re-rotation would not be exact.
LENGTH_DEPENDENT_ROPE_TYPES = ("dynamic", "longrope")


def _frequency_axes(rotary: torch.nn.Module, half: int, axes: int) -> torch.Tensor | None:
    """The axis driving each frequency, as the model's own recomposition lays them out; None if it has none.

    Each axis' frequency table is filled with its axis number and the model recomposes them.
    """
    recompose = getattr(rotary, "recomposition_frequencies", None)
    if recompose is None:
        return None
    probe = torch.arange(axes, dtype=torch.float32).view(axes, 1, 1, 1).expand(axes, 1, 1, half).clone()
    owners = recompose(probe)[0, 0, :half].round().long()  # [half]; the second half repeats the first
    if owners.shape[0] != half or owners.min() < 0 or owners.max() >= axes:
        raise InfinipotError("cannot tell which M-RoPE axis drives each rotary frequency of this model: "
                             "use `positions` original")
    return owners


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension, as transformers' rotary code does."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass(frozen=True)
class KeyRotator:
    """The rotary geometry of one language model, enough to turn its cached keys."""

    inv_freq: torch.Tensor  # [half] float32, exactly the model's buffer
    freq_axis: torch.Tensor  # [half] long: the position axis that drives each frequency
    interleaved: bool = False  # Qwen3-VL's M-RoPE: row and column ids start at the temporal id

    @classmethod
    def from_rotary_embedding(cls, rotary: torch.nn.Module, axes: int) -> KeyRotator:
        """Read a transformers rotary-embedding module (`language_model.rotary_emb`).

        `axes` is 1 for 1-D RoPE and 3 for M-RoPE, whose module carries `mrope_section`.
        """
        rope_type = getattr(rotary, "rope_type", "default")
        if rope_type in LENGTH_DEPENDENT_ROPE_TYPES:
            raise InfinipotError(
                f"compact positions need a fixed rotary frequency table, but this model uses {rope_type!r} RoPE, "
                "whose frequencies change with the sequence length: use `positions` original"
            )
        inv_freq = rotary.inv_freq.detach().to("cpu", torch.float32).clone()
        half = inv_freq.shape[0]
        if axes == 1:
            return cls(inv_freq, torch.zeros(half, dtype=torch.long))
        section = [int(size) for size in getattr(rotary, "mrope_section", None) or []]
        if sum(section) != half:
            raise InfinipotError(
                f"the model's M-RoPE sections {section} do not cover its {half} rotary frequencies: "
                "use `positions` original"
            )
        freq_axis = _frequency_axes(rotary, half, axes)
        if freq_axis is None:  # transformers assigns section i to axis i % 3 (freq.split(mrope_section), m[i % 3])
            owners = torch.tensor([index % axes for index in range(len(section))], dtype=torch.long)
            freq_axis = owners.repeat_interleave(torch.tensor(section))
        # Chunked sections never step back to an earlier axis; interleaved ones do at every cycle.
        return cls(inv_freq, freq_axis, interleaved=bool((freq_axis.diff() < 0).any()))

    def renumber(self, position: torch.Tensor, start: int) -> torch.Tensor:
        """Compact positions for the kept tokens, from `start` (docs/design.md, "Positions"). [heads, tokens, axes]"""
        return packed_positions(position, start) if self.interleaved else dense_positions(position, start)

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """The model's own float32 angles, as float64, on the positions' device. [..., axes] long -> [..., half]"""
        device = positions.device
        driving = positions[..., self.freq_axis.to(device)].to(torch.float32)  # exact below 2**24
        return (driving * self.inv_freq.to(device)).to(torch.float64)

    def rotate(self, keys: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Keys made at `old` positions, turned to `new` ones.

        keys: [..., tokens, head_dim]; old, new: [..., tokens, axes] long (same leading shape).
        """
        if keys.shape[-1] != 2 * self.inv_freq.shape[0]:
            raise ValueError(f"keys have head_dim {keys.shape[-1]}, rotary table expects {2 * self.inv_freq.shape[0]}")
        work = keys.device if keys.device.type in ("cpu", "cuda") else torch.device("cpu")  # MPS has no float64
        turn = self.angles(new.to(work)) - self.angles(old.to(work))  # [..., tokens, half] float64
        cos, sin = (torch.cat((part, part), dim=-1).to(keys.device, torch.float32) for part in (turn.cos(), turn.sin()))
        key = keys.to(torch.float32)
        return (key * cos + rotate_half(key) * sin).to(keys.dtype)
