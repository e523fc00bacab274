import urllib.error
import urllib.request

import pytest

from worker.kv_cache.metrics import CacheMetrics, render_prometheus
from worker.metrics_server import start_metrics_server


def test_metrics_endpoint_serves_prometheus_text():
    server = start_metrics_server(0, lambda: render_prometheus(CacheMetrics(hit_tokens=42)), host="127.0.0.1")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "hybatch_kv_cache_hit_tokens_total 42" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    finally:
        server.shutdown()
