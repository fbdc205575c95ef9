"""What a generation costs, whether paying for it is allowed, and what a batch did cost.

RunComfy documents neither prices nor the balance (see ``runcomfy.optional``), so any number here
may be unknown. An unknown price or balance is logged as not checked and the work goes on; only a
limit the user set, with the numbers to compare known, stops a payment before it is made: the
balance reserve (``min_balance_usd``) before one generation, the budget (``budget_usd``) and the
balance before a batch.

The price of one generation is the model info's ``base_price_usd`` (per output, or per second of
video when ``price_unit`` is ``second``: frames / 24 seconds), else the connection's extra
``price_usd`` (per generation).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_dreamina.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_FRAMES,
    DEFAULT_MODEL_ID,
    FRAMES_PER_SECOND,
)
from airflow_provider_dreamina.exceptions import (
    DreaminaBalanceReserveError,
    DreaminaBudgetExceededError,
    DreaminaDownloadError,
    DreaminaInvalidInputError,
)

if TYPE_CHECKING:
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import ImageToVideoInput, ModelInfo
    from airflow_provider_dreamina.outputs.manifest import Manifest

log = logging.getLogger(__name__)

_PER_OUTPUT_UNITS = frozenset({"output", "outputs", "per_output", "video", "per_video", "generation"})
_PER_SECOND_UNITS = frozenset({"second", "seconds", "per_second", "sec", "s"})


def usd(amount: float) -> str:
    """An amount as people read it: ``0.5 USD``, ``0.2521 USD``, ``12 USD``."""
    text = f"{amount:.4f}".rstrip("0").rstrip(".")
    return f"{'0' if text in ('', '-0') else text} USD"


@dataclass(frozen=True)
class PriceEstimate:
    """The estimated price of one generation, and where the figure came from (for log lines)."""

    usd: float | None
    source: str

    def __str__(self) -> str:
        if self.usd is None:
            return f"unknown ({self.source})"
        return f"about {usd(self.usd)} ({self.source})"


def price_from_model_info(info: ModelInfo | None, frames: int) -> float | None:
    """One generation's price by the model's catalog entry; None when it gives none usable."""
    if info is None or info.base_price_usd is None or info.base_price_usd < 0:
        return None
    unit = (info.price_unit or "output").replace(" ", "_")
    if unit in _PER_SECOND_UNITS:
        return info.base_price_usd * frames / FRAMES_PER_SECOND
    if unit in _PER_OUTPUT_UNITS:
        # Dreamina image-to-video makes one video per request.
        return info.base_price_usd
    log.info("RunComfy prices the model per %r, a unit this provider does not know", info.price_unit)
    return None


def estimate_price(
    hook: DreaminaHook, model_id: str = DEFAULT_MODEL_ID, frames: int = DEFAULT_FRAMES
) -> PriceEstimate:
    """One generation's price: by the model info, else the connection's ``price_usd`` extra."""
    info = hook.get_model_info(model_id)
    price = price_from_model_info(info, frames)
    if price is not None:
        assert info is not None and info.base_price_usd is not None
        unit = info.price_unit or "output"
        return PriceEstimate(price, f"model info: {usd(info.base_price_usd)} per {unit}")
    fallback = hook.settings.price_usd
    if fallback is not None:
        return PriceEstimate(fallback, f"price_usd of connection '{hook.dreamina_conn_id}'")
    return PriceEstimate(
        None,
        f"no price in RunComfy's model info and no price_usd extra on connection '{hook.dreamina_conn_id}'",
    )


def reserve_usd(hook: DreaminaHook, min_balance_usd: float | str | None) -> float | None:
    """The reserve in force: the task's own, else the connection's ``min_balance_usd`` extra."""
    if min_balance_usd is None or min_balance_usd == "":
        return hook.settings.min_balance_usd
    try:
        return float(min_balance_usd)
    except (TypeError, ValueError):
        raise DreaminaInvalidInputError(
            f"min_balance_usd is {min_balance_usd!r}; give an amount in USD such as 20, or None",
            field="min_balance_usd",
        ) from None


def check_reserve(
    hook: DreaminaHook, request: ImageToVideoInput, model_id: str, min_balance_usd: float | str | None
) -> None:
    """Refuse to pay when the balance would fall below the reserve; called right before a submit.

    Without a reserve nothing is asked. With one, an unknown balance is logged and the
    generation goes ahead; an unknown price counts as 0, so the balance alone is checked.

    :raises DreaminaBalanceReserveError: the balance minus this generation's price is below the reserve.
    """
    reserve = reserve_usd(hook, min_balance_usd)
    if reserve is None:
        return
    balance = hook.get_balance()
    if balance is None:
        log.warning(
            "Could not check the balance reserve of %s: RunComfy did not tell the balance of connection "
            "'%s'; submitting anyway",
            usd(reserve),
            hook.dreamina_conn_id,
        )
        return
    estimate = estimate_price(hook, model_id, request.frames)
    if estimate.usd is None:
        log.warning("The price of this generation is %s; checking the balance alone", estimate)
    left = balance - (estimate.usd or 0.0)
    if left < reserve:
        raise DreaminaBalanceReserveError(
            f"not submitting: the balance is {usd(balance)} and this generation costs {estimate}, which "
            f"would leave {usd(left)}, below the reserve of {usd(reserve)} (min_balance_usd). Top up the "
            "RunComfy account or lower min_balance_usd, then clear the task.",
            price_usd=estimate.usd,
            balance_usd=balance,
            limit_usd=reserve,
        )
    log.info(
        "Balance %s; this generation (%s) leaves %s, not below the reserve of %s",
        usd(balance),
        estimate,
        usd(left),
        usd(reserve),
    )


@dataclass(frozen=True)
class BatchPlan:
    """What a batch is expected to cost, and what could not be checked."""

    rows: list[dict[str, Any]]
    row_prices_usd: list[float | None]
    total_usd: float | None
    budget_usd: float | None
    balance_usd: float | None
    reserve_usd: float | None
    #: What could not be checked: "price", "budget", "balance".
    unchecked: list[str] = field(default_factory=list)


def plan_batch(
    rows: Sequence[Mapping[str, Any]],
    *,
    budget_usd: float | str | None = None,
    dreamina_conn_id: str = DEFAULT_CONN_ID,
    model_id: str = DEFAULT_MODEL_ID,
    hook: DreaminaHook | None = None,
) -> BatchPlan:
    """Estimate a batch before anything is paid: rows times the price of a generation, against the budget
    and against the balance left above the connection's reserve. Logs the price of each row and
    the total, and says what it could not check.

    :param rows: one dict per generation; a row's ``frames`` (default 121) sets its price when the
        model is priced per second.
    :raises DreaminaBudgetExceededError: the estimate is over ``budget_usd`` or over the available
        balance.
    """
    if hook is None:
        from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

        hook = DreaminaHook(dreamina_conn_id=dreamina_conn_id)
    budget = None if budget_usd is None or budget_usd == "" else float(budget_usd)
    estimates: dict[int, PriceEstimate] = {}
    prices: list[float | None] = []
    for number, row in enumerate(rows, start=1):
        frames = int(row.get("frames") or DEFAULT_FRAMES)
        if frames not in estimates:
            estimates[frames] = estimate_price(hook, model_id, frames)
        estimate = estimates[frames]
        prices.append(estimate.usd)
        log.info("Row %d (%s, %d frames): %s", number, _label(row), frames, estimate)
    known = all(price is not None for price in prices)
    total = math.fsum(price or 0.0 for price in prices) if known else None
    unchecked: list[str] = []
    if total is None:
        sources = "; ".join(sorted({found.source for found in estimates.values() if found.usd is None}))
        log.warning("Estimated cost of the %d rows: unknown (%s)", len(prices), sources)
        unchecked.append("price")
    else:
        log.info("Estimated cost of the %d rows: %s in all", len(prices), usd(total))

    if budget is None:
        log.info("No budget_usd given: the batch is not held to a budget")
    elif total is None:
        log.warning("Could not check the budget of %s: the price of a generation is unknown", usd(budget))
        unchecked.append("budget")
    elif total > budget:
        raise DreaminaBudgetExceededError(
            f"not starting the batch: its {len(prices)} rows would cost about {usd(total)}, over the budget "
            f"of {usd(budget)} (budget_usd); nothing was submitted",
            price_usd=total,
            limit_usd=budget,
        )
    else:
        log.info("Within the budget of %s", usd(budget))

    reserve = hook.settings.min_balance_usd
    balance = hook.get_balance()
    if balance is None:
        log.warning(
            "Could not check the balance: RunComfy did not tell the balance of connection '%s'",
            hook.dreamina_conn_id,
        )
        unchecked.append("balance")
    else:
        available = balance - (reserve or 0.0)
        held = f" (balance {usd(balance)} minus the reserve of {usd(reserve)})" if reserve else ""
        if total is not None and total > available:
            raise DreaminaBudgetExceededError(
                f"not starting the batch: its {len(prices)} rows would cost about {usd(total)}, more "
                f"than the available {usd(available)}{held}; nothing was submitted. Top up the RunComfy "
                "account, or make the batch smaller.",
                price_usd=total,
                balance_usd=balance,
                limit_usd=available,
            )
        log.info("Available balance: %s%s", usd(available), held)
    return BatchPlan(
        rows=[dict(row) for row in rows],
        row_prices_usd=prices,
        total_usd=total,
        budget_usd=budget,
        balance_usd=balance,
        reserve_usd=reserve,
        unchecked=unchecked,
    )


def _label(row: Mapping[str, Any]) -> str:
    prompt = str(row.get("prompt") or "no prompt")
    return repr(prompt if len(prompt) <= 40 else prompt[:39] + "…")


# What a batch did cost, from the manifests DreaminaDownloadOperator wrote beside each video


def actual_spend(manifests: Iterable[Manifest]) -> dict[str, Any]:
    """The count of videos, what their requests cost in all, and the cost per second of video.

    A request's cost counts once even when it saved several files. ``total_cost_usd`` is None
    when no request reported its cost; ``cost_unreported`` counts requests that did not.
    """
    manifests = list(manifests)
    costs: dict[str, float | None] = {}
    seconds = 0.0
    for number, manifest in enumerate(manifests):
        costs.setdefault(manifest.request_id or f"#{number}", manifest.cost_usd)
        seconds += manifest.video_seconds or 0.0
    reported = [cost for cost in costs.values() if cost is not None]
    total = round(math.fsum(reported), 6) if reported else None
    return {
        "count": len(manifests),
        "total_cost_usd": total,
        "cost_unreported": len(costs) - len(reported),
        "video_seconds": round(seconds, 2),
        "cost_per_second_usd": round(total / seconds, 6) if total is not None and seconds else None,
    }


def read_manifests(uris: Iterable[str]) -> list[Manifest]:
    """The manifest beside each stored video (``<file>.json``), read through Airflow's object storage.

    :raises DreaminaDownloadError: a video has no readable manifest beside it.
    """
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_dreamina.outputs.manifest import MANIFEST_READ_LIMIT, Manifest, manifest_name

    manifests = []
    for uri in uris:
        path = ObjectStoragePath(uri)
        with path.with_name(manifest_name(path.name)).open("rb") as handle:  # type: ignore[no-untyped-call]
            manifest = Manifest.read(handle.read(MANIFEST_READ_LIMIT))
        if manifest is None:
            raise DreaminaDownloadError(
                f"{uri} has no readable manifest beside it ({manifest_name(path.name)})"
            )
        manifests.append(manifest)
    return manifests
