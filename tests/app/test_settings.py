from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings, cpu_quota_cores, get_settings, parse_pins, sessions_for


def test_every_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_MODEL_STORE", "/srv/store")
    monkeypatch.setenv("INFERENCE_PINNED_VERSIONS", "review-sentiment=2, product-embedder=1")
    monkeypatch.setenv("INFERENCE_BATCHING", "false")
    monkeypatch.setenv("INFERENCE_SESSIONS_PER_MODEL", "3")
    monkeypatch.setenv("INFERENCE_API_TOKEN", "x" * 20)
    monkeypatch.setenv("INFERENCE_RECOMMEND_EVENT_WEIGHTS", '{"purchase": 5, "view": 0.5}')
    s = get_settings()
    assert s.model_store == Path("/srv/store")
    assert s.pinned_versions == {"review-sentiment": "2", "product-embedder": "1"}
    assert s.batching is False
    assert s.sessions_per_model == 3
    assert s.api_token is not None
    assert s.api_token.get_secret_value() == "x" * 20
    assert "x" * 20 not in repr(s)
    assert s.recommend_event_weights == {"purchase": 5.0, "view": 0.5}


def test_nothing_is_read_at_import_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_QUEUE_CAPACITY", "7")
    assert get_settings().queue_capacity == 7
    monkeypatch.setenv("INFERENCE_QUEUE_CAPACITY", "9")
    assert get_settings().queue_capacity == 9


def test_every_setting_documents_its_reason() -> None:
    for name, field in Settings.model_fields.items():
        assert len(field.description or "") > 15, name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_tokens": 64, "max_sequence_length": 128}, "max_batch_tokens"),
        ({"sub_batch_size": 8, "max_batch_size": 4}, "sub_batch_size"),
        ({"api_token": "short"}, "api_token"),
        ({"api_token": "with a space in it, long enough"}, "api_token"),
        ({"api_token": "non-ascii-tökén-0123456789"}, "api_token"),
        ({"admin_token": "tab\tinside-0123456789"}, "admin_token"),
        ({"api_token": "same-token-0123456789", "admin_token": "same-token-0123456789"}, "differ"),
        ({"max_texts_per_request": 5000}, "max_texts_per_request"),
        ({"queue_capacity": 0}, "queue_capacity"),
        ({"provider": "tpu"}, "provider"),
        ({"recommend_event_weights": {"wishlist": 2.0}}, "recommend_event_weights"),
        ({"recommend_event_weights": {"cart": -1.0}}, "recommend_event_weights"),
        ({"recommend_event_weights": {"cart": float("inf")}}, "recommend_event_weights"),
    ],
)
def test_contradictory_or_unsafe_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(max_batchsize=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["review-sentiment", "a=0", "a=x", "a=1,a=2", "=3", "a=²", "a=01", "a=٣"])
def test_bad_pins_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="pin"):
        parse_pins(bad)


def test_sessions_default_to_the_cpu_quota_on_cpu_and_one_on_gpu() -> None:
    cores = cpu_quota_cores()
    assert cores > 0
    assert sessions_for(Settings(), on_gpu=False) == max(1, int(cores + 0.5))
    assert sessions_for(Settings(), on_gpu=True) == 1
    assert sessions_for(Settings(sessions_per_model=3), on_gpu=True) == 3
