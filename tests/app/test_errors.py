from __future__ import annotations

import app.errors as errors
from app.metrics import REJECTION_REASONS


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_has_a_status_and_a_distinct_type() -> None:
    classes = _subclasses(errors.ServiceError)
    assert classes <= set(errors.STATUS_OF)
    types = [c.type for c in classes]
    assert len(types) == len(set(types))


def test_status_table() -> None:
    assert errors.status_of(errors.QueueFull("x")) == 429
    assert errors.status_of(errors.DeadlineExceeded("x")) == 504
    assert errors.status_of(errors.Draining("x")) == 503
    assert errors.status_of(errors.ModelNotFound("x")) == 404
    assert errors.status_of(errors.InvalidRequest("bad", "texts.0")) == 422
    assert errors.status_of(errors.BodyTooLarge("x")) == 413


def test_rejection_reasons_are_the_documented_metric_labels() -> None:
    assert set(errors.REJECTION_REASON_OF.values()) == set(REJECTION_REASONS)
    assert errors.rejection_reason(errors.InferenceFailed("x")) is None


def test_invalid_request_names_its_field() -> None:
    err = errors.InvalidRequest("too long", "candidates.3.text")
    assert err.message.startswith("candidates.3.text")
    assert errors.error_body(err.type, err.message) == {
        "error": {"type": "invalid_request", "message": "candidates.3.text: too long"}
    }
