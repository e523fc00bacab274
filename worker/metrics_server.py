"""The worker's Prometheus endpoint: ``GET /metrics`` on ``HYBATCH_WORKER_METRICS_PORT``.

Serves the prefix-cache counters of the process's engine (``worker.kv_cache.metrics``) in the
Prometheus text format; before the engine is loaded the counters are zero.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def start_metrics_server(port: int, render: Callable[[], str], host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104
    """Serves ``render()`` at /metrics from a daemon thread; returns the server (``.shutdown()``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def render_engine_metrics() -> str:
    from worker import engine_pool
    from worker.kv_cache.metrics import CacheMetrics, render_prometheus

    llm = engine_pool.loaded_llm()
    return render_prometheus(llm.cache_metrics() if llm is not None else CacheMetrics())
