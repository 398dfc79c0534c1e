"""Merged tokens in the cache: their keys and values from a policy's recipe, and the time order after insertion.

A merging policy (HERMES's summary token, StreamMem's frame prototypes) names, per merged token,
the cached tokens it is made of, their weights and the rotary position it is made at
(`MergedTokens`). Keys sit in the cache after RoPE, so each source key is first turned from its
own position to the merged token's (exact: RoPE is a rotation, infinipot.rope), then weighted;
values are weighted as they are. The merged token is then a key the model could have made at
that position, and compact positions turn it like any other (docs/design.md, "Policies").
"""

from __future__ import annotations

import torch

from infinipot.layout import VisualLayout
from infinipot.policies.base import LayerView, MergedTokens
from infinipot.rope import KeyRotator


def merged_rows(view: LayerView, merged: MergedTokens, rotator: KeyRotator
                ) -> tuple[torch.Tensor, torch.Tensor, VisualLayout]:
    """Keys, values `[heads, merged, dim]` and layout of the merged tokens, from the view's tokens."""
    heads, count, sources = merged.sources.shape
    flat = merged.sources.reshape(heads, count * sources).to(view.keys.device)

    def pick(tensor: torch.Tensor) -> torch.Tensor:  # [heads, tokens, d] -> [heads, count, sources, d]
        width = tensor.shape[-1]
        return tensor.gather(1, flat.unsqueeze(-1).expand(-1, -1, width)).view(heads, count, sources, width)

    old = pick(view.layout.position.to(view.keys.device))  # [heads, count, sources, axes]
    new = merged.position.to(old.device).unsqueeze(2).expand_as(old)
    work = torch.promote_types(view.keys.dtype, torch.float32)  # sums in at least float32
    turned = rotator.rotate(pick(view.keys), old, new).to(work)  # [heads, count, sources, dim]
    weights = merged.weights.to(view.keys.device, work).unsqueeze(-1)  # [heads, count, sources, 1]
    keys = (turned * weights).sum(dim=2).to(view.keys.dtype)
    values = (pick(view.values).to(work) * weights).sum(dim=2).to(view.values.dtype)
    device = view.layout.frame.device
    layout = VisualLayout(
        frame=merged.frame.to(device),
        row=torch.full((heads, count), -1, dtype=torch.long, device=device),
        col=torch.full((heads, count), -1, dtype=torch.long, device=device),
        position=merged.position.to(device),
        merged=torch.ones(heads, count, dtype=torch.bool, device=device),
        marker=torch.zeros(heads, count, dtype=torch.bool, device=device),
    )
    return keys, values, layout


def time_order(layout: VisualLayout) -> torch.Tensor | None:
    """Per head, the slot order that sorts tokens by their first position axis (stable); None if already sorted.

    Compact positions renumber axis 0 in cache order, which must therefore never decrease; a
    merged token appended after the kept ones moves back to its place in time.
    """
    first = layout.position[..., 0]  # [heads, tokens]
    if layout.tokens < 2 or bool((first[:, 1:] >= first[:, :-1]).all()):
        return None
    return torch.sort(first, dim=-1, stable=True).indices
