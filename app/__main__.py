"""`python -m app`: the one way to start the server (the Makefile, the image, k8s, the benchmarks and the
tests use it). uvicorn with the production options, all taken from the settings (INFERENCE_*):

- the factory `app.main:create_app` and the protocol `app.http.ServiceHttpProtocol` (one-write responses,
  the header deadline INFERENCE_HEADER_TIMEOUT_S);
- uvicorn's access log off (the service logs refusals and failures itself and counts every request);
- INFERENCE_MAX_CONNECTIONS as uvicorn's concurrency limit (503 above it);
- INFERENCE_SHUTDOWN_TIMEOUT_S as uvicorn's graceful-shutdown bound, so that a stalled upload cannot keep
  the process (and the lifespan shutdown that releases the models) from ending;
- INFERENCE_HOST and INFERENCE_PORT.

uvicorn's own loggers stay at its default level (info: a few lines at startup and shutdown, which the
rolling-restart test reads); INFERENCE_LOG_LEVEL is the level of the service's `app` loggers.
"""

from __future__ import annotations

import uvicorn

from app.http import ServiceHttpProtocol
from app.settings import Settings, get_settings


def server_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        http=ServiceHttpProtocol.with_header_timeout(settings.header_timeout_s),
        access_log=False,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type] # a float works
    )


def main() -> None:
    uvicorn.Server(server_config(get_settings())).run()


if __name__ == "__main__":
    main()
