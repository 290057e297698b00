"""Fake `modules.upscaler`: `Upscaler` (abstract `do_upscale(img, selected_model)` at `self.scale`)
and `UpscalerData(name, path, upscaler, scale, model)`, as in SD.Next; `shared.sd_upscalers` holds
`UpscalerData` items. `Upscaler.upscale()` keeps the host's trap: it runs `shared.state.begin()` /
`end()` (which clears a pending Stop).

Test-only upscalers (`fake_upscalers()`): SD.Next's "Resize ..." family, a 4x model upscaler
(nearest neighbour) that counts its calls, one that fails (returns its input, as SD.Next's
upscalers do after logging an error), and a latent one.
"""

from __future__ import annotations

from PIL import Image


class Upscaler:
    name = None
    scale = 1
    scalers: list = []

    def __init__(self, create_dirs=True):
        self.scalers = []

    def do_upscale(self, img, selected_model: str):
        return img

    def upscale(self, img, scale, selected_model: str | None = None):
        from modules import shared

        jobid = shared.state.begin("Upscale")
        self.scale = scale
        img = self.do_upscale(img, selected_model)
        shared.state.end(jobid)
        return img


class UpscalerData:
    custom: bool = False
    name = None
    data_path = None
    scale: int = 4
    scaler: Upscaler | None = None

    def __init__(self, name: str, path: str | None = None, upscaler: Upscaler | None = None, scale: int = 4,
                 model=None):
        self.name = name
        self.data_path = path
        self.local_data_path = path
        self.scaler = upscaler
        self.scale = scale
        self.model = model


class FakeResize(Upscaler):
    def __init__(self):
        super().__init__(False)
        self.name = "Resize"
        self.scalers = [UpscalerData("Resize Lanczos", None, self), UpscalerData("Resize Nearest", None, self)]

    def do_upscale(self, img, selected_model=None):
        size = (int(img.width * self.scale), int(img.height * self.scale))
        method = Image.Resampling.LANCZOS if selected_model == "Resize Lanczos" else Image.Resampling.NEAREST
        return img.resize(size, resample=method)


class FakeModel(Upscaler):
    def __init__(self):
        super().__init__(False)
        self.name = "ESRGAN"
        self.calls = 0
        self.scalers = [UpscalerData("ESRGAN 4x-Fake", "/models/ESRGAN/4x-Fake.pth", self, 4),
                        UpscalerData("ESRGAN Broken", "/models/ESRGAN/broken.pth", self, 4)]

    def do_upscale(self, img, selected_model):
        self.calls += 1
        if selected_model == "ESRGAN Broken":
            return img  # SD.Next logs "Upscaler cannot find model" and returns the input
        return img.resize((img.width * 4, img.height * 4), resample=Image.Resampling.NEAREST)


class FakeLatent(Upscaler):
    def __init__(self):
        super().__init__(False)
        self.name = "Latent"
        self.scalers = [UpscalerData("Latent Nearest", None, self)]


class FakeNone(Upscaler):
    def __init__(self):
        super().__init__(False)
        self.name = "None"
        self.scalers = [UpscalerData("None", None, self)]


def fake_upscalers() -> list[UpscalerData]:
    return [item for cls in (FakeNone, FakeLatent, FakeResize, FakeModel) for item in cls().scalers]
