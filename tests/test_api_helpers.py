"""Shared helpers (no tests here): a real uvicorn server in a thread, images and polling for the API tests."""

from __future__ import annotations

import base64
import io
import socket
import struct
import threading
import time
import zlib

import numpy as np
import requests
import uvicorn
from PIL import Image

API = "/framepack/v1"
FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False)
"""Tiny settings: one 0.4 s section is 13 frames at 32 px, two steps."""
FINISHED = ("completed", "interrupted", "failed", "cancelled")


class LiveServer:
    """uvicorn on 127.0.0.1 with a socket bound to a free port before the server starts (no race)."""

    def __init__(self, app):
        self.app = app
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.socket.close()


def png_bytes(seed: int = 0, size: tuple[int, int] = (32, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def png_header(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header declares width x height (pixel data is bogus)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def job_body(seed: int = 1, **fields) -> dict:
    return {**FAST, "image": b64(png_bytes(seed)), "prompt": "rain on a window", "duration": 0.4,
            "seed": seed, **fields}


def wait_finished(url: str, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = requests.get(f"{url}{API}/jobs/{job_id}", timeout=10).json()
        if state["status"] in FINISHED:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish in {timeout} s: {state}")
        time.sleep(0.05)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
