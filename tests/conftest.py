"""Shared test setup: offline, quiet, few threads, and the tiny random-weight model."""

from __future__ import annotations

import os
import warnings

# Before anything imports huggingface_hub / transformers / diffusers / gradio.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["DIFFUSERS_VERBOSITY"] = "error"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# diffusers 0.42 passes an argument huggingface_hub 2.x has retired; harmless, noisy.
warnings.filterwarnings("ignore", message=r".*local_dir_use_symlinks.*")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random-weight model (framepack.models.tiny), built once per session.

    FRAMEPACK_TINY_DIR, when set, is reused (and built there if missing).
    """
    from framepack.models.tiny import build_tiny_model, ensure_tiny_model

    if os.environ.get("FRAMEPACK_TINY_DIR", "").strip():
        return ensure_tiny_model()
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-random")


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:.*local_dir_use_symlinks:UserWarning")
