"""OpenLineage: what a submit task read and what a download task wrote, named by OpenLineage's rules.

Only the operators' ``get_openlineage_facets_on_complete`` import this module, and only where the
``openlineage`` extra (``apache-airflow-providers-openlineage``) is installed: it imports
OpenLineage's classes at the top, so a DAG file never pays for them.

Dataset names follow OpenLineage's naming spec: a local file is ``file`` + its absolute path; an
object in a store is ``scheme://bucket`` + its key (``s3://bucket``, ``gs://bucket``,
``abfss://container@account.dfs.core.windows.net``); a web resource is ``https://host[:port]`` + its
path. User info, query strings and fragments are never part of a name: a signed URL carries its
secret there. A ``data:`` URI is inline data, not a dataset.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from airflow.providers.common.compat.openlineage.facet import (
    DatasetFacet,
    InputDataset,
    OutputDataset,
    OutputStatisticsOutputDatasetFacet,
    RunFacet,
)
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_dreamina.locations import NotOnThisMachine, locate

if TYPE_CHECKING:
    from airflow_provider_dreamina.models import GenerationInput, RequestResult
    from airflow_provider_dreamina.outputs.saving import StoredOutput

#: The key of this provider's facets in a run or a dataset (custom facets carry a prefix); the
#: classes are private: events name a facet by its key.
RUN_FACET = "dreamina_generation"
FILE_FACET = "dreamina_file"
# Stores whose URIs put the container before an "@" in the authority, where it is part of the name.
_CONTAINER_AT_ACCOUNT = frozenset({"abfs", "abfss", "wasb", "wasbs"})
_WEB = frozenset({"http", "https"})


@attrs.define
class _GenerationRunFacet(RunFacet):
    """What a run asked Dreamina for and what it cost: the request, model, seed, frames and USD."""

    request_id: str | None = None
    model_id: str | None = None
    seed: int | None = None
    frames: int | None = None
    cost_usd: float | None = None


@attrs.define
class _FileDatasetFacet(DatasetFacet):
    """A stored output as its manifest describes it: SHA-256, size, content type, request."""

    sha256: str
    size_bytes: int
    content_type: str | None = None
    request_id: str | None = None


def dataset_name(location: str) -> tuple[str, str] | None:
    """OpenLineage ``(namespace, name)`` of an image or a stored file; None for inline data."""
    text = str(location).strip()
    if not text or text[:5].lower() == "data:":
        return None
    try:
        place = locate(text)
    except NotOnThisMachine:
        return None  # refused as an input, never written to: no dataset of this machine
    if place.path is not None:
        return "file", os.path.abspath(place.path)
    parts = urlsplit(place.uri or "")
    scheme = parts.scheme.lower()
    authority = parts.netloc if scheme in _CONTAINER_AT_ACCOUNT else parts.netloc.rpartition("@")[2]
    if not authority:
        return None
    if scheme in _WEB:
        return f"{scheme}://{authority.lower()}", parts.path or "/"
    return f"{scheme}://{authority}", parts.path.lstrip("/") or "/"


def submit_lineage(
    image_url: str, request_id: str | None, generation: GenerationInput, result: RequestResult | None
) -> Any:
    """The ``OperatorLineage`` of a submit task: the image it sent, its generation as a run facet."""
    image = dataset_name(image_url)
    return OperatorLineage(
        inputs=[InputDataset(namespace=image[0], name=image[1])] if image is not None else [],
        run_facets={
            RUN_FACET: _GenerationRunFacet(
                request_id=request_id,
                model_id=generation.model_id,
                seed=generation.seed,
                frames=generation.frames,
                cost_usd=result.cost if result is not None else None,
            )
        },
    )


def download_lineage(request_id: str, stored: list[StoredOutput], cost_usd: float | None) -> Any:
    """The ``OperatorLineage`` of a download task: every file it stored, in its destination's
    namespace, with size and SHA-256."""
    outputs = []
    for output in stored:
        named = dataset_name(output.uri)
        if named is None:
            continue
        outputs.append(
            OutputDataset(
                namespace=named[0],
                name=named[1],
                facets={
                    FILE_FACET: _FileDatasetFacet(
                        sha256=output.sha256,
                        size_bytes=output.size_bytes,
                        content_type=output.content_type,
                        request_id=request_id,
                    )
                },
                outputFacets={
                    "outputStatistics": OutputStatisticsOutputDatasetFacet(
                        size=output.size_bytes, fileCount=1
                    )
                },
            )
        )
    return OperatorLineage(
        outputs=outputs,
        run_facets={RUN_FACET: _GenerationRunFacet(request_id=request_id, cost_usd=cost_usd)},
    )
