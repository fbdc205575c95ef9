"""The image to submit: what a task's ``image_url`` becomes, under the policy, checked.

An ``https`` URL or a ``data:`` URI is sent as it is (a URL is probed first when it is public, see
``preflight``); a local path or object-storage URI is read under the allowed roots (``sources``)
and sent inline as a ``data:`` URI. With ``validate``, the image is checked against the schema's
rules (``rules``) before anything is paid for.
"""

from __future__ import annotations

import httpx

from airflow_provider_dreamina.inputs import preflight
from airflow_provider_dreamina.inputs.rules import check_data_uri, inline
from airflow_provider_dreamina.inputs.sources import ImagePolicy, image_label, read_allowed, source_kind


def prepare_image(
    source: str,
    *,
    validate: bool = True,
    policy: ImagePolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """The image URI to submit for ``source``, allowed by ``policy`` and, with ``validate``,
    checked against the schema."""
    policy = policy or ImagePolicy()
    kind = source_kind(source)
    if kind == "url":
        _check_url(source, policy)
        if validate:
            preflight.preflight_url(
                source,
                image_label(source),
                allowed_hosts=policy.allowed_hosts,
                seconds=policy.deadline,
                transport=transport,
            )
        return source
    if kind == "data":
        check_data_uri(source, validate=validate)
        return source
    raw, size = read_allowed(source, policy)
    return inline(raw, size, image_label(source), validate=validate)


def _check_url(source: str, policy: ImagePolicy) -> None:
    # Even unchecked, a URL RunComfy cannot fetch (plain http) is refused before anything is paid.
    try:
        preflight.parsed(source, policy.allowed_hosts)
    except preflight.RefusedURL as refusal:
        raise preflight.refused(image_label(source), str(refusal)) from None
