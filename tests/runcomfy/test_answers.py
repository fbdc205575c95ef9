"""Answer to error mapping: each error from its real trigger at the emulator."""

from __future__ import annotations

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaAuthError,
    DreaminaInsufficientBalanceError,
    DreaminaInvalidInputError,
    DreaminaNotFoundError,
    DreaminaRejectedInputError,
    DreaminaServerError,
)
from tests.helpers import (
    Api,
    data_uri,
    fast_hook,
    sample_input,
)

# -- errors, each from its real trigger -----------------------------------------------------


def test_rejected_token_names_the_connection_not_the_token(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(token="another-token-entirely")
    with pytest.raises(DreaminaAuthError) as caught:
        api(fast_hook(), "get_status", "some-request")
    text = str(caught.value)
    assert caught.value.status_code == 401
    assert caught.value.error_code == 400004
    assert "dreamina_default" in text
    assert emulator.token not in text


def test_forbidden_token_is_an_auth_error(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(forbidden_tokens=[emulator.token])
    with pytest.raises(DreaminaAuthError) as caught:
        api(fast_hook(), "submit", sample_input(emulator))
    assert caught.value.status_code == 403


def test_insufficient_balance(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(balance_usd=0)
    with pytest.raises(DreaminaInsufficientBalanceError, match="top it up") as caught:
        api(fast_hook(), "submit", sample_input(emulator))
    assert caught.value.error_code == 400002
    assert emulator.counters()["submissions"] == 0


def test_unknown_request_is_not_found(emulator: EmulatorHandle, api: Api) -> None:
    with pytest.raises(DreaminaNotFoundError, match="no-such-request") as caught:
        api(fast_hook(), "get_result", "no-such-request")
    assert caught.value.error_code == 404001


def test_server_side_validation_error_carries_detail(emulator: EmulatorHandle, api: Api) -> None:
    small = data_uri(300, 300)
    with pytest.raises(DreaminaRejectedInputError) as caught:
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[small]), validate_image=False)
    assert caught.value.status_code == 422
    assert caught.value.error_code == 422001
    assert caught.value.field == "image_urls"
    assert caught.value.detail
    assert isinstance(caught.value, DreaminaInvalidInputError)


@pytest.mark.parametrize("message_field", ["error_message", "message", "error", "detail"])
def test_error_message_is_read_from_any_field(emulator: EmulatorHandle, message_field: str) -> None:
    emulator.configure(message_field=message_field)
    with pytest.raises(DreaminaNotFoundError) as caught:
        fast_hook().get_status("missing-request")
    assert caught.value.message.count("(") >= 1
    assert "unknown" in str(caught.value).lower()


def test_200_with_error_code_is_an_error(emulator: EmulatorHandle, api: Api) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("result", "error_200", count=10)
    with pytest.raises(DreaminaServerError) as caught:
        api(fast_hook(max_retries=1), "get_result", submitted.request_id)
    assert caught.value.status_code == 200
    assert caught.value.error_code == 500001
