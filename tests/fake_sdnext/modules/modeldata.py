"""Fake `modules.modeldata`: `shared.sd_model` as a property that loads on read.

Reading `shared.sd_model` while nothing is loaded makes the host load its configured image
model (here: a recorded `FakeImagePipeline`); assigning it is ignored while `locked` (startup).
"""

from __future__ import annotations

import threading
from types import ModuleType


class FakeImagePipeline:
    """What the host would load for `opts.sd_model_checkpoint` (an image model)."""

    def __init__(self, name: str):
        self.name = name
        self.sd_checkpoint_info = None

    def __repr__(self) -> str:
        return f"FakeImagePipeline({self.name!r})"


class ModelData:
    def __init__(self):
        self.sd_model = None
        self.sd_model_name = ""
        self.initial = True
        self.locked = True  # SD.Next unlocks once startup has finished
        self.lock = threading.Lock()
        self.fake_loads: list[str] = []  # test-only: host model loads triggered by a read

    def get_sd_model(self):
        from modules import shared

        if self.locked:
            return self.sd_model
        if self.sd_model is None and shared.opts.sd_model_checkpoint != "None" and not self.lock.locked():
            with self.lock:
                self.fake_loads.append(shared.opts.sd_model_checkpoint)
                self.sd_model = FakeImagePipeline(shared.opts.sd_model_checkpoint)
                self.sd_model_name = shared.opts.sd_model_checkpoint
                self.initial = False
        return self.sd_model

    def set_sd_model(self, value):
        if not self.locked:
            self.sd_model = value


model_data = ModelData()


class Shared(ModuleType):
    @property
    def sd_loaded(self):
        return model_data.sd_model is not None

    @property
    def sd_model(self):
        return model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        model_data.set_sd_model(value)

    @property
    def sd_model_type(self):
        model = model_data.sd_model
        return "none" if model is None else type(model).__name__
