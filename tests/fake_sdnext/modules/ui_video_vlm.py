"""Fake `modules.ui_video_vlm`: the Video tab's prompt enhancer (`models`, `enhance_prompt`).

Same signature as the host's; the "VLM" here appends a fixed phrase and records the call.
"""

from __future__ import annotations

models = ["Google Gemma 3 4B"]
fake_calls: list[dict] = []  # test-only
fake_answer: list = [None]  # test-only: a fixed answer (e.g. "" for a VLM that gives none)


def enhance_prompt(enable: bool, model: str | None = None, image=None, prompt: str = "", system_prompt: str = "",
                   nsfw: bool = True):
    fake_calls.append({"enable": enable, "model": model, "image": image, "prompt": prompt,
                       "system_prompt": system_prompt, "nsfw": nsfw})
    if not enable:
        return prompt
    if fake_answer[0] is not None:
        return fake_answer[0]
    seen = f" ({image.width}x{image.height} image)" if image is not None else ""
    return f"{prompt}, the camera slowly pushes in{seen}"
