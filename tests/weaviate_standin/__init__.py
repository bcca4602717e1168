"""An in-process Weaviate stand-in that the real ``weaviate-client`` v4 drives end to end.

It speaks Weaviate's own protocols: gRPC through the servicer stubs generated inside the
installed client (``weaviate/proto/v1/*_pb2_grpc.py``: Search, BatchObjects, BatchDelete,
TenantsGet, Aggregate and the health check) and REST through a small ``http.server`` (``/v1/meta``,
``/v1/.well-known/ready``, ``/v1/schema`` with tenants, ``/v1/objects/{class}/{id}``). It stores
objects per tenant, validates property types with Weaviate's error texts, evaluates filters,
ranks vectors exactly, scores BM25 and fuses hybrid results as Weaviate documents.

What it models:

- collections with ``text``, ``text[]``, ``int``, ``number``, ``boolean``, ``date``, ``uuid`` (and
  their arrays) properties, self-provided vectors (legacy or named), distances ``cosine``,
  ``dot`` and ``l2-squared``; multi-tenancy with ``autoTenantCreation`` and active/inactive tenants;
- batch insert (upsert) with per-object errors, batch delete with matches/successful counts,
  single-object REST insert / replace (PUT) / merge (PATCH) / delete / exists;
- ``fetch_objects`` (UUID order without a filter, insertion order with one, ``after`` cursor,
  sort), ``near_vector`` (exact), ``bm25`` (k1/b from the class, per-property statistics over the
  whole tenant, the ``en`` stopwords dropped from the query, AND / minimum-match operators),
  ``hybrid`` (``rankedFusion`` and ``relativeScoreFusion``, each sub-search capped at 100),
  ``aggregate.over_all(total_count=True)`` with a filter;
- filters ``equal``/``not_equal``/range/``like``/``contains_any``/``contains_all``/
  ``contains_none``/``is_none`` and ``&``/``|``/``not``, on properties, ``by_id`` and the
  timestamps, with Weaviate's text semantics (the filter value is tokenised with the property's
  tokenisation and every token must occur) and its refusals (unknown property, a value of the
  wrong type, ``is_none`` without ``indexNullState``, timestamps without ``indexTimestamps``).

What it does not model (a request for these fails loudly, never silently): vectorizer and
generative/reranker modules, ``near_text``/``near_object``/media searches, multi-target and
multi-vectors, cross-references and object properties, geo and phone properties and geo or
property-length filters, group-by, autocut, boosts, auth/RBAC, replication and consistency
levels, backups, aliases, the batch stream API (``client.batch``/``data.ingest``), aggregations
other than the count, auto-schema (an unknown property is refused, as with
``AUTOSCHEMA_ENABLED=false``), HNSW approximation (search is exact), BlockMax WAND's exact score
details, and range filters on text (compared as whole strings). State lives in memory only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import WeaviateStandIn

__all__ = ["WeaviateStandIn", "weaviate_standin"]


@pytest.fixture
def weaviate_standin() -> Iterator[WeaviateStandIn]:
    """A started stand-in for one test; import this fixture into the test module to use it."""
    with WeaviateStandIn() as standin:
        yield standin
