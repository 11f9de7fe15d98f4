"""Which failed calls may be sent again, and how long to wait before each retry.

The sync hook and the async hook both retry through :func:`retry_arguments`, so they retry the
same failures with the same backoff. Nothing here does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from airflow_provider_mirpanel.exceptions import MirPanelAPIError, MirPanelInputError, MirPanelTransientError
from airflow_provider_mirpanel.protocol.actions import READ_ONLY_ACTIONS, Action


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: ``retries`` more attempts, exponential backoff with jitter.

    :param retries: attempts after the first.
    :param backoff: the ceiling of the first pause, in seconds; it doubles with each retry (each pause is
        between half its ceiling and all of it).
    :param backoff_max: the highest ceiling of a pause, in seconds.
    :param retry_after_max: the most seconds of a panel's ``Retry-After`` that are honoured (a longer one
        is cut to this).
    """

    retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based).

        Exponential backoff with jitter, never shorter than the panel's ``Retry-After``.
        """
        ceiling = min(self.backoff_max, self.backoff * 2.0 ** (attempt - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay


def may_retry(action: Action, error: BaseException) -> bool:
    """Whether a failed call may be sent again.

    Only transient failures are retried. Read-only actions always may be; ``add``, ``refill`` and
    ``cancel`` only when the panel certainly did not process the request (never connected, or
    turned away with 429) — there is no idempotency key, so a resent ``add`` is a second paid order.
    """
    if not isinstance(error, MirPanelTransientError):
        return False
    return action in READ_ONLY_ACTIONS or not error.request_sent


def outcome_unknown(action: Action, error: BaseException) -> bool:
    """Whether an ``add`` that failed with ``error`` may nonetheless have placed the order.

    The order is known not to exist only when the panel refused it (a panel error) or the
    request certainly never reached it; any other failure after sending leaves it unknown.
    """
    if action is not Action.ADD or isinstance(error, (MirPanelAPIError, MirPanelInputError)):
        return False
    return not (isinstance(error, MirPanelTransientError) and not error.request_sent)


class WarningLogger(Protocol):
    """Anything with a ``warning`` method: a stdlib or an Airflow task logger."""

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any:
        """Log ``event`` at WARNING level."""


def retry_arguments(action: Action, policy: RetryPolicy, logger: WarningLogger) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` that apply the rules above.

    The sync hook and the async triggers both retry through this, so they retry the same failures
    with the same backoff.
    """

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.wait(state.attempt_number, error)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "MirPanel %s failed (%s); retry %d of %d in %.1f s",
            action.value,
            error,
            state.attempt_number,
            policy.retries,
            sleep,
        )

    return {
        "stop": stop_after_attempt(policy.retries + 1),
        "wait": wait,
        "retry": retry_if_exception(lambda error: may_retry(action, error)),
        "before_sleep": before_sleep,
        "reraise": True,
    }
