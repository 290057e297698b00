"""StandaloneHost: the Host protocol services outside SD.Next, and both hosts speak the same protocol."""

from __future__ import annotations

from fake_sdnext.harness import FakeSdnext
from framepack.request.host import Host
from framepack.host.standalone import StandaloneHost


def test_standalone_services(tmp_path):
    host = StandaloneHost(output_dir=tmp_path, device="cpu", cache_dir=str(tmp_path / "hf"), offline=True,
                          settings={"framepack_crf": 20, "keep_incomplete": False})
    assert isinstance(host, Host)
    assert host.video_dir() == tmp_path / "video" and host.video_dir().is_dir()
    assert host.option("framepack_codec") == "libx264"  # the same defaults as the SD.Next settings
    assert host.option("missing", 3) == 3
    assert host.output_defaults() == {"codec": "libx264", "container": "mp4", "crf": 20, "save_frames": False,
                                      "save_images": False, "image_format": "png", "keep_incomplete": False}
    assert host.request_defaults() == {"variant": "original", "teacache_threshold": 0.15}
    host.task_queued("task(x)")  # no progress-bar tasks outside SD.Next
    host.task_finished("task(x)")
    assert host.cache_dir == str(tmp_path / "hf") and host.offline is True and host.device == "cpu"
    with host.gpu_lock():
        pass
    token = host.begin_job("t", control=host.new_control("task(x)"))
    host.end_job(token)
    assert StandaloneHost(output_dir=tmp_path, videos=tmp_path / "here").video_dir() == tmp_path / "here"


def test_sdnext_host_implements_the_protocol(tmp_path):
    with FakeSdnext(tmp_path):
        from framepack.host.sdnext import SdnextHost

        host = SdnextHost()
        assert isinstance(host, Host)
        protocol = {name for name in dir(Host) if not name.startswith("_")}
        assert protocol <= set(dir(host)) and protocol <= set(dir(StandaloneHost))
