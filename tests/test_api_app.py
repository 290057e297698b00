"""The standalone app factory: API routes first, then the Gradio tab mounted at "/" (real HTTP)."""

from __future__ import annotations

import sys

import pytest
import requests

from framepack.app import create_app
from framepack.host.standalone import StandaloneHost
from test_api_helpers import API, LiveServer


@pytest.fixture
def host(tmp_path):
    return StandaloneHost(output_dir=tmp_path, model="unused-no-job-runs-here")


def _probe_ui(host, queue):
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.Markdown("probe tab", elem_id="fpk_probe")
    return blocks


def test_tab_is_mounted_at_root_after_the_api_routes(host):
    app = create_app(host, ui=_probe_ui)
    assert app.state.framepack_ui is not None
    with LiveServer(app) as server:
        page = requests.get(server.url + "/", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "fpk_probe" in requests.get(server.url + "/config", timeout=30).text
        codecs = requests.get(f"{server.url}{API}/codecs", timeout=60)  # not swallowed by the mount
        assert codecs.status_code == 200 and "libx264" in codecs.json()["codecs"]
        assert requests.get(f"{server.url}{API}/jobs/none", timeout=10).status_code == 404
        assert requests.get(server.url + "/docs", timeout=10).status_code == 200
    assert app.state.framepack_queue._closed  # the app made the queue, so the server shut it down


def test_without_the_tab_package_the_app_serves_the_api_only(host, monkeypatch):
    monkeypatch.setitem(sys.modules, "framepack.ui", None)  # as if framepack/ui did not exist
    app = create_app(host)  # ui=True: falls back with a warning
    assert app.state.framepack_ui is None
    assert any(getattr(route, "path", None) == "/" for route in app.routes)


def test_a_broken_tab_package_is_not_hidden(host, monkeypatch):
    import types

    broken = types.ModuleType("framepack.ui")

    def __getattr__(name):
        raise ImportError("No module named 'some_missing_dependency'", name="some_missing_dependency")

    broken.__getattr__ = __getattr__
    monkeypatch.setitem(sys.modules, "framepack.ui", broken)
    with pytest.raises(ImportError, match="some_missing_dependency"):
        create_app(host)


def test_a_given_queue_is_left_to_its_owner(host):
    from framepack.jobs.queue import JobQueue

    queue = JobQueue(host)
    app = create_app(host, queue, ui=False)
    with LiveServer(app) as server:
        assert requests.get(f"{server.url}{API}/jobs", timeout=10).json() == {"jobs": []}
    assert not queue._closed
    queue.shutdown()


def test_the_real_tab_is_mounted(host):
    tab = pytest.importorskip("framepack.ui")
    if not hasattr(tab, "create_ui"):
        pytest.skip("framepack.ui.create_ui (the tab) not present yet")
    app = create_app(host)
    assert app.state.framepack_ui is not None
    with LiveServer(app) as server:
        assert requests.get(server.url + "/", timeout=60).status_code == 200
        assert "fpk_" in requests.get(server.url + "/config", timeout=60).text
        assert requests.get(f"{server.url}{API}/codecs", timeout=60).status_code == 200
