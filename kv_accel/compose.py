"""Composition of separately built KV caches: re-rotation plus CacheBlend-style recompute.

Gluing the caches of two memory chunks ``A`` and ``B`` that were each prefilled alone is
**never exact**: ``B``'s keys carry RoPE positions ``0..n-1`` instead of their true ones, and
none of ``B``'s tokens attended to ``A``. This module repairs the first error exactly and the
second one partly:

* :func:`rerotate` moves a cache to later positions by rotating its keys with the model's own
  RoPE frequencies (a rotation by ``p + d`` is a rotation by ``p`` followed by one by ``d``);
* :func:`compose` concatenates re-rotated parts and then recomputes a fraction of the later
  parts' tokens, the ones whose keys and values deviate most from a full prefill at an early
  layer (CacheBlend, Yao et al., EuroSys 2025), so that those tokens attend to the earlier
  parts through every layer;
* :func:`answer_kl` measures what is left: the mean KL divergence of the next-token
  distributions over an answer, teacher-forced, with one cache against another.

The measured divergences are in ``docs/kv_compose.md``. Where the chunks can be ordered
(system, stable memories, volatile memories), extending a cached prefix with
:func:`kv_accel.activation.extend_cache` is exact and should be preferred; a composed cache
says so in its ``meta`` (``meta["exact"] is False``).

Example:
    >>> lm = LocalModel.smollm2()                                   # doctest: +SKIP
    >>> a, b = build_cache(lm, ids_a), build_cache(lm, ids_b)       # doctest: +SKIP
    >>> ab = compose(lm, [a, b], recompute=0.15)                    # doctest: +SKIP
    >>> ab.meta["exact"], ab.token_ids == ids_a + ids_b             # doctest: +SKIP
    (False, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from memos_core import InvalidInputError, NotSupportedError

from ._deps import torch_mod
from .activation import KVCache, _forward
from .model import LocalModel

__all__ = ["answer_kl", "compose", "rerotate"]

#: rope types whose frequencies depend on the sequence length, so that a rotation by ``d``
#: does not move a key from position ``p`` to ``p + d``
_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


# ----------------------------------------------------------------------------- RoPE


def _rope(lm: LocalModel) -> Any:
    """The model's RoPE inverse frequencies (fp32 tensor of ``rotary_dim / 2``)."""
    base = lm.base
    params = getattr(base.config, "rope_parameters", None) or getattr(base.config, "rope_scaling", None)
    if isinstance(params, dict):
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type in _LENGTH_DEPENDENT_ROPE:
            raise NotSupportedError(
                f"rope_type {rope_type!r} changes its frequencies with the sequence length; "
                "a cache cannot be moved to other positions by a rotation"
            )
    found: list[Any] = []
    for name, buffer in base.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        seen = any(buffer.shape == f.shape and bool((buffer == f).all()) for f in found)
        if leaf.endswith("inv_freq") and "original" not in leaf and not seen:
            found.append(buffer)
    if not found:
        raise NotSupportedError(
            f"{type(base).__name__} has no rotary position embedding (no inv_freq buffer); "
            "caches can only be re-positioned for RoPE models"
        )
    if len(found) > 1:
        raise NotSupportedError(
            f"{type(base).__name__} uses {len(found)} different RoPE frequency sets (per layer type); "
            "re-rotation supports one"
        )
    return found[0].detach().to("cpu", dtype=torch_mod().float32)


def _rotate(keys: Any, inv_freq: Any, delta: int) -> Any:
    """Rotate ``keys`` ([..., tokens, head_dim]) by ``delta`` positions, ``rotate_half`` layout.

    Only the first ``2 * len(inv_freq)`` dims rotate (partial rotary, as in GPT-NeoX and Phi);
    the attention scaling some RoPE variants multiply into cos/sin is already in the keys."""
    torch = torch_mod()
    rot = 2 * int(inv_freq.shape[0])
    if rot > keys.shape[-1]:
        raise NotSupportedError(f"RoPE covers {rot} dims but the keys have {keys.shape[-1]}")
    angles = float(delta) * inv_freq.to(torch.float64)
    cos = torch.cat((angles.cos(), angles.cos())).to(torch.float32)
    sin = torch.cat((angles.sin(), angles.sin())).to(torch.float32)
    k = keys.to(torch.float32)
    head, tail = k[..., :rot], k[..., rot:]
    half = rot // 2
    rotated = head * cos + torch.cat((-head[..., half:], head[..., :half]), dim=-1) * sin
    return torch.cat((rotated, tail), dim=-1) if tail.shape[-1] else rotated


def rerotate(cache: KVCache, lm: LocalModel, offset: int) -> KVCache:
    """The same cache moved ``offset`` positions later.

    A cache built at positions ``0..n-1`` becomes the cache of the same tokens at positions
    ``offset..offset+n-1``: its keys are rotated by ``offset`` with the model's own RoPE
    frequencies, its values are unchanged. Positions are then exactly right; what the tokens
    attended to (nothing before position 0) is not, which is why :func:`compose` recomputes.

    Args:
        cache: a cache built with ``lm`` (its ``meta["position_offset"]``, when set, says where
            it already starts).
        lm: the model; its rotary embedding supplies the frequencies.
        offset: how many positions to move the cache by (``>= 0``).

    Returns:
        A new fp32 :class:`KVCache` with ``meta["position_offset"]`` updated.

    Raises:
        InvalidInputError: ``offset`` is not a non-negative integer.
        NotSupportedError: the model has no RoPE, or one whose frequencies depend on the
            sequence length (``dynamic``, ``longrope``) or vary per layer.
        StaleCacheError: the cache was built with another model state.
    """
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError(f"offset must be a non-negative integer, not {offset!r}")
    cache.check(lm)
    inv_freq = _rope(lm)
    torch = torch_mod()
    keys = [_rotate(k, inv_freq, offset) if offset else k.to(torch.float32).clone() for k in cache.keys]
    meta = dict(cache.meta)
    meta["position_offset"] = int(meta.get("position_offset", 0)) + offset
    return KVCache(
        keys=keys,
        values=[v.to(torch.float32).clone() for v in cache.values],
        token_ids=list(cache.token_ids),
        model=lm.fingerprint(),
        source=cache.source,
        meta=meta,
    )


# ----------------------------------------------------------------------------- compose


class _Stop(Exception):
    """Raised by a forward pre-hook to end a forward after the layers it needs."""


def _decoder_layers(lm: LocalModel) -> Any:
    torch = torch_mod()
    n = getattr(lm.base.config, "num_hidden_layers", None)
    for module in lm.base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise NotSupportedError(f"cannot find the {n} decoder layers of {type(lm.base).__name__}")


def _full_context_kv(lm: LocalModel, first: KVCache, later_ids: Sequence[int], layer: int) -> tuple[Any, Any]:
    """Keys and values of ``later_ids`` at ``layer`` in a true prefill on top of ``first``.

    Runs only layers ``0..layer`` (a pre-hook on the next layer ends the forward): the cost
    is ``(layer + 1) / num_layers`` of prefilling ``later_ids``."""
    layers = _decoder_layers(lm)
    dynamic = first.to_dynamic()
    handle = None
    if layer + 1 < len(layers):

        def stop(*_: Any) -> None:
            raise _Stop

        handle = layers[layer + 1].register_forward_pre_hook(stop)
    try:
        _forward(lm, later_ids, dynamic)
    except _Stop:
        pass
    finally:
        if handle is not None:
            handle.remove()
    n = first.n_tokens
    return dynamic.layers[layer].keys[:, :, n:], dynamic.layers[layer].values[:, :, n:]


def _deviation(true_k: Any, true_v: Any, k: Any, v: Any) -> Any:
    """Per-token deviation: relative L2 error of the keys plus that of the values (summed over
    heads), so neither dominates by scale. Shape ``[tokens]``."""
    dk = (true_k - k).flatten(0, 1).transpose(0, 1).flatten(1).norm(dim=-1)
    dv = (true_v - v).flatten(0, 1).transpose(0, 1).flatten(1).norm(dim=-1)
    nk = true_k.flatten(0, 1).transpose(0, 1).flatten(1).norm(dim=-1).clamp_min(1e-6)
    nv = true_v.flatten(0, 1).transpose(0, 1).flatten(1).norm(dim=-1).clamp_min(1e-6)
    return dk / nk + dv / nv


def _recompute(lm: LocalModel, cache: KVCache, positions: Sequence[int]) -> None:
    """Recompute the keys and values of the tokens at ``positions`` in place, through every
    layer, each attending to all earlier tokens: the cached entries of unselected tokens and
    the fresh entries of selected ones (a custom 4D mask over cache + appended tokens)."""
    torch = torch_mod()
    n, k = cache.n_tokens, len(positions)
    pos = torch.tensor(list(positions), dtype=torch.long)
    allowed = torch.zeros((k, n + k), dtype=torch.bool)
    selected = torch.zeros(n, dtype=torch.bool)
    selected[pos] = True
    allowed[:, :n] = (torch.arange(n)[None, :] < pos[:, None]) & ~selected[None, :]
    allowed[:, n:] = pos[None, :] <= pos[:, None]
    mask = torch.zeros((1, 1, k, n + k), dtype=torch.float32)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    dynamic = cache.to_dynamic()
    input_ids = torch.tensor([[cache.token_ids[p] for p in positions]], dtype=torch.long)
    with torch.no_grad():
        lm.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=pos[None, :],
            cache=dynamic,
            use_cache=True,
        )
    for i, layer in enumerate(dynamic.layers):
        cache.keys[i][:, :, pos] = layer.keys[:, :, n:]
        cache.values[i][:, :, pos] = layer.values[:, :, n:]


def compose(
    lm: LocalModel,
    parts: Sequence[KVCache],
    *,
    recompute: float = 0.15,
    select_layer: int = 1,
    reposition: bool = True,
) -> KVCache:
    """One cache for the concatenation of ``parts``, each built alone from position 0.

    1. Each part after the first is re-rotated to where it starts in the concatenation
       (:func:`rerotate`), and all keys and values are concatenated.
    2. When ``recompute > 0``: the later parts' tokens are prefilled on top of the first part
       through layers ``0..select_layer`` only, their keys and values there are compared with
       the composed ones, and the ``ceil(recompute * later tokens)`` tokens with the largest
       deviation (relative L2 error of keys plus that of values) are recomputed through every
       layer, attending to all earlier tokens. This is CacheBlend's selection of high-KV-
       deviation tokens, made once at ``select_layer`` instead of refined layer by layer.

    ``recompute=1.0`` recomputes every later token and equals a joint prefill (up to float
    error), at the cost of one. Layer 0 cannot select anything: its keys depend only on the
    token and its position, so after re-rotation they already deviate by nothing.

    Args:
        lm: the model every part was built with.
        parts: the caches, in prompt order; the first stays exact.
        recompute: the fraction of the later parts' tokens to recompute, in ``[0, 1]``.
        select_layer: the layer whose deviation picks the tokens (``1`` as in CacheBlend).
        reposition: ``False`` keeps every part at its own positions (naive concatenation, as
            MemOS does); only for measuring, and only with ``recompute=0``.

    Returns:
        A new fp32 :class:`KVCache` whose ``token_ids`` are the parts' ids concatenated and
        whose ``meta`` records ``composed``, ``method``, ``recompute``, ``recomputed_tokens``,
        ``parts`` (token counts) and ``exact`` (``False`` whenever there is more than one part).

    Raises:
        InvalidInputError: no parts, parts from different models, ``recompute`` outside
            ``[0, 1]``, a bad ``select_layer``, or ``reposition=False`` with recompute.
        StaleCacheError: the parts were built with another model state than ``lm``'s.
        NotSupportedError: the model's position embedding cannot be re-rotated.
    """
    torch = torch_mod()
    parts = list(parts)
    if not parts:
        raise InvalidInputError("compose needs at least one cache")
    if not all(isinstance(p, KVCache) for p in parts):
        raise InvalidInputError("compose takes KVCache values")
    if isinstance(recompute, bool) or not isinstance(recompute, int | float) or not 0.0 <= recompute <= 1.0:
        raise InvalidInputError(f"recompute must be a fraction in [0, 1], not {recompute!r}")
    n_layers = int(getattr(lm.base.config, "num_hidden_layers", len(parts[0].keys)))
    if isinstance(select_layer, bool) or not isinstance(select_layer, int) or not 0 < select_layer < n_layers:
        raise InvalidInputError(
            f"select_layer must be an integer in [1, {n_layers - 1}], not {select_layer!r}"
        )
    if not reposition and recompute > 0:
        raise InvalidInputError(
            "recompute needs reposition=True (tokens are recomputed at their true positions)"
        )
    first = parts[0].model.to_dict()
    for i, part in enumerate(parts[1:], start=1):
        theirs = part.model.to_dict()
        wrong = [k for k in first if k != "dtype" and first[k] != theirs[k]]
        if wrong:
            raise InvalidInputError(
                f"part {i} was built with another model than part 0 ({', '.join(wrong)} differ)"
            )
    if any(int(p.meta.get("position_offset", 0)) for p in parts):
        raise InvalidInputError("compose takes caches built from position 0 (one part is already re-rotated)")
    for part in parts:
        part.check(lm)

    with lm.lock:
        offsets = [0]
        for part in parts[:-1]:
            offsets.append(offsets[-1] + part.n_tokens)
        moved = [
            rerotate(p, lm, off) if (reposition and off) else rerotate(p, lm, 0)
            for p, off in zip(parts, offsets, strict=True)
        ]
        n_layers = len(moved[0].keys)
        out = KVCache(
            keys=[torch.cat([m.keys[i] for m in moved], dim=2) for i in range(n_layers)],
            values=[torch.cat([m.values[i] for m in moved], dim=2) for i in range(n_layers)],
            token_ids=[t for p in parts for t in p.token_ids],
            model=lm.fingerprint(),
        )
        n_first = parts[0].n_tokens
        later = out.n_tokens - n_first
        n_select = min(later, math.ceil(recompute * later - 1e-9)) if recompute > 0 else 0
        if n_select:
            true_k, true_v = _full_context_kv(lm, parts[0], out.token_ids[n_first:], select_layer)
            dev = _deviation(
                true_k,
                true_v,
                out.keys[select_layer][:, :, n_first:],
                out.values[select_layer][:, :, n_first:],
            )
            chosen = torch.topk(dev, n_select).indices.sort().values + n_first
            _recompute(lm, out, [int(p) for p in chosen])

    if len(parts) == 1:
        method = "single"
    elif not reposition:
        method = "naive"
    else:
        method = "rerotate+recompute" if n_select else "rerotate"
    out.meta.update(
        {
            "composed": True,
            "method": method,
            "recompute": float(recompute),
            "recomputed_tokens": n_select,
            "select_layer": select_layer if n_select else None,
            "parts": [p.n_tokens for p in parts],
            "part_sources": [None if p.source is None else p.source.to_dict() for p in parts],
            "exact": len(parts) == 1,
        }
    )
    return out


# ----------------------------------------------------------------------------- divergence


def _answer_logprobs(lm: LocalModel, cache: KVCache, prompt: list[int], answer: list[int]) -> Any:
    """Log-probabilities ``[len(answer), vocab]`` of the distributions that predict each answer
    token after ``cache`` and ``prompt``."""
    torch = torch_mod()
    if prompt:
        dynamic, ids = cache.to_dynamic(), [*prompt, *answer[:-1]]
    else:  # nothing between cache and answer: re-feed the cache's last token for its logits
        keep = cache.n_tokens - 1
        dynamic = cache.to_dynamic(length=keep) if keep else None
        ids = [cache.token_ids[-1], *answer[:-1]]
    out = _forward(lm, ids, dynamic)
    return torch.log_softmax(out.logits[0, -len(answer) :].to(torch.float64), dim=-1)


def answer_kl(
    lm: LocalModel,
    prefix_cache: KVCache,
    reference: KVCache,
    answer_ids: Sequence[int],
    *,
    prompt_ids: Sequence[int] = (),
) -> float:
    """Mean KL divergence ``KL(reference || prefix_cache)`` of the next-token distributions
    over ``answer_ids``, teacher-forced.

    Both caches get the same continuation, ``prompt_ids`` (e.g. the question turn, fed but not
    scored) then ``answer_ids``; at each answer token the model's distribution with
    ``prefix_cache`` is compared with its distribution with ``reference``. ``0`` means the
    cache changes nothing the answer depends on (a joint prefill against itself, or an exact
    extension); dropping a chunk the answer needs gives a large value.

    Args:
        lm: the model both caches were built with.
        prefix_cache: the cache under test (e.g. a composed one).
        reference: the cache it is compared with (e.g. a joint prefill of the same ids).
        answer_ids: the answer tokens to score (at least one).
        prompt_ids: tokens between the cache and the answer.

    Returns:
        The mean over answer tokens, in nats.

    Raises:
        InvalidInputError: no answer ids.
        StaleCacheError: a cache was built with another model state.
    """
    answer = [int(i) for i in answer_ids]
    if not answer:
        raise InvalidInputError("answer_ids must hold at least one token")
    prefix_cache.check(lm)
    reference.check(lm)
    prompt = [int(i) for i in prompt_ids]
    with lm.lock:
        mine = _answer_logprobs(lm, prefix_cache, prompt, answer)
        ref = _answer_logprobs(lm, reference, prompt, answer)
    kl = (ref.exp() * (ref - mine)).sum(dim=-1)
    return float(kl.mean())
