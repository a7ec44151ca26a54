"""JSON responses rendered with orjson (numpy-aware), and the error response."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from app.errors import error_body


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> ORJSONResponse:
    return ORJSONResponse(error_body(error_type, message), status_code=status, headers=headers)
