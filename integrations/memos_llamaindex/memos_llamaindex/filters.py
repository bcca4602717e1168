"""LlamaIndex ``MetadataFilters`` compiled to the MemOS filter DSL (``docs/filters.md``).

Node metadata is stored in a memory's ``info``, so every key is addressed as ``info.<key>``:
a metadata key that happens to share a name with a memory column (``key``, ``tags``, ``id``)
still means the metadata. The mapping, with LlamaIndex's reference semantics
(``SimpleVectorStore``):

=========================  ===============================================================
``FilterOperator``         MemOS filter
=========================  ===============================================================
``EQ NE GT GTE LT LTE``    ``eq ne gt gte lt lte``
``IN NIN``                 ``in nin`` (a scalar value is treated as a one-element list)
``CONTAINS``               ``contains`` (an array holds the value)
``ANY`` / ``ALL``          ``or`` / ``and`` of ``contains``, one per value
``TEXT_MATCH``             ``contains`` (case-sensitive substring)
``TEXT_MATCH_INSENSITIVE`` ``like "%value%"`` (ASCII case folding); a value holding ``%`` or
                           ``_`` is refused, since the DSL's ``like`` has no escape
``IS_EMPTY``               missing or null, or ``""`` (:class:`~memos_llamaindex.MemosVectorStore`
                           does not store empty lists or nulls, so those read as missing)
=========================  ===============================================================

Conditions: ``AND`` → ``and``, ``OR`` → ``or``, ``NOT`` → ``not`` of the ``or`` (LlamaIndex:
"none of the filters match"). Nested ``MetadataFilters`` nest. As in LlamaIndex, a missing
key passes ``NE`` and ``NIN`` and fails every other test. An operator without a mapping
raises :class:`memos_core.FilterError` naming the offending filter.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from memos_core import FilterError

__all__ = ["to_memos_filter"]

_SIMPLE = {
    FilterOperator.EQ: "eq",
    FilterOperator.NE: "ne",
    FilterOperator.GT: "gt",
    FilterOperator.GTE: "gte",
    FilterOperator.LT: "lt",
    FilterOperator.LTE: "lte",
    FilterOperator.CONTAINS: "contains",
    FilterOperator.TEXT_MATCH: "contains",
}


def to_memos_filter(filters: MetadataFilters | None, *, prefix: str = "info.") -> dict[str, Any] | None:
    """Compile LlamaIndex metadata filters to a MemOS filter.

    Args:
        filters: the filters (``None`` or an empty list means no filter).
        prefix: put before every metadata key; ``"info."`` addresses the memory's ``info``
            (where :class:`~memos_llamaindex.MemosVectorStore` keeps node metadata). Use
            ``""`` to let bare keys mean memory fields too (``memory_type``, ``tags``).

    Returns:
        The MemOS filter, or ``None`` for no filter.

    Raises:
        FilterError: an operator or condition without a mapping, or a value it cannot take.

    Example:
        >>> to_memos_filter(MetadataFilters(filters=[MetadataFilter(key="year", value=2024)]))
        {'and': [{'info.year': {'eq': 2024}}]}
    """
    if filters is None or not filters.filters:
        return None
    return _group(filters, prefix, "$")


def _group(filters: MetadataFilters, prefix: str, path: str) -> dict[str, Any]:
    children: list[dict[str, Any]] = []
    for i, child in enumerate(filters.filters):
        where = f"{path}.filters[{i}]"
        if isinstance(child, MetadataFilters):
            if child.filters:
                children.append(_group(child, prefix, where))
        else:
            children.append(_leaf(child, prefix, where))
    condition = filters.condition or FilterCondition.AND
    if not children:  # only empty nested groups: they constrain nothing
        return {"id": {"exists": True}}
    if condition == FilterCondition.AND:
        return {"and": children}
    if condition == FilterCondition.OR:
        return {"or": children}
    if condition == FilterCondition.NOT:
        return {"not": {"or": children}}
    raise FilterError(f"filter condition {condition!r} has no mapping to the MemOS filter DSL", path=path)


def _leaf(f: MetadataFilter, prefix: str, path: str) -> dict[str, Any]:
    key = f"{prefix}{f.key}"
    op, value = f.operator, f.value
    if op in _SIMPLE:
        return {key: {_SIMPLE[op]: value}}
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = value if isinstance(value, list) else [value]
        return {key: {"in" if op == FilterOperator.IN else "nin": values}}
    if op in (FilterOperator.ANY, FilterOperator.ALL):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise FilterError(f"{op.name} needs at least one value", path=path)
        return {"or" if op == FilterOperator.ANY else "and": [{key: {"contains": v}} for v in values]}
    if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
        if not isinstance(value, str) or "%" in value or "_" in value:
            raise FilterError(
                "TEXT_MATCH_INSENSITIVE takes a string without '%' or '_' (MemOS 'like' has no "
                "escape character); use TEXT_MATCH for an exact substring",
                path=path,
            )
        return {key: {"like": f"%{value}%"}}
    if op == FilterOperator.IS_EMPTY:
        return {"or": [{key: {"exists": False}}, {key: {"eq": ""}}]}
    raise FilterError(
        f"filter operator {op!r} has no mapping to the MemOS filter DSL; supported: "
        + ", ".join(o.name for o in _SUPPORTED),
        path=path,
    )


_SUPPORTED = (
    *_SIMPLE,
    FilterOperator.IN,
    FilterOperator.NIN,
    FilterOperator.ANY,
    FilterOperator.ALL,
    FilterOperator.TEXT_MATCH_INSENSITIVE,
    FilterOperator.IS_EMPTY,
)
