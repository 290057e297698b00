"""The Model accordion: load / unload, the host settings it writes, the component recipe."""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from framepack.errors import FramePackError
from framepack.request.events import Status
from framepack.ui.values import ATTENTION_KEY, OFFLOAD_KEY, QUANT_KEY, RECIPE_KEY, _esc, error_html, info_html

def _busy(job_queue) -> bool:
    return any(not Status(job.status).finished for job in job_queue.list())


def model_status_html(host) -> str:
    try:
        loaded = host.loaded_variant()
    except Exception as error:  # noqa: BLE001 - shown, never raised into the page
        return error_html(f"Model status unavailable: {error}")
    settings = [f"{label} {host.option(key, '-') or '-'}" for label, key in
                (("quantization", QUANT_KEY), ("offload", OFFLOAD_KEY), ("attention", ATTENTION_KEY))]
    device = getattr(host, "device", None)
    head = f"Loaded: {loaded}" if loaded else "No model loaded (loads on the first Generate)"
    extra = " · ".join(settings + ([f"device {device}"] if device else []))
    return f'<div class="fpk-model-status">{_esc(head)}<br><span>{_esc(extra)}</span></div>'


def load_model(host, job_queue, variant: str) -> str:
    if _busy(job_queue):
        return error_html("A generation is queued or running; the model is loaded for it. Try again when it ends.")
    started = time.perf_counter()
    try:
        with host.gpu_lock():
            host.pipeline(variant)
    except FramePackError as error:
        return error_html(str(error))
    return info_html(f"{variant} model ready in {time.perf_counter() - started:.1f} s")


def unload_model(host, job_queue) -> str:
    if _busy(job_queue):
        return error_html("A generation is queued or running; unload when it ends.")
    host.unload()
    return info_html("Model unloaded")


def settings_writable(host) -> bool:
    return callable(getattr(host, "set_option", None)) or isinstance(getattr(host, "settings", None), dict)


def store_setting(host, key: str, value: Any) -> bool:
    """Write a host setting: `host.set_option` when the host has one, else its `settings` dict."""
    setter = getattr(host, "set_option", None)
    if callable(setter):
        setter(key, value)
        return True
    settings = getattr(host, "settings", None)
    if isinstance(settings, dict):
        settings[key] = value
        return True
    return False


def change_setting(host, key: str, value: Any, label: str) -> str:
    if store_setting(host, key, value):
        return info_html(f"{label}: {value} (used from the next model load)")
    return error_html(f"{label} is a host setting here: change it in Settings -> FramePack")


def _recipe_for(host, variant: str):
    recipe = getattr(host, "recipe", None)
    if callable(recipe):
        return recipe(variant)
    from framepack.models.recipe import default_recipe

    return default_recipe(variant)


def recipe_json(host, variant: str) -> str:
    """The effective component recipe as editable JSON: role -> hub id[/subfolder] or folder."""
    try:
        return recipe_json_from(_recipe_for(host, variant))
    except FramePackError as error:
        return json.dumps({"error": str(error)}, indent=2)


def apply_recipe(host, variant: str, text: str) -> tuple[str, str]:
    """Validate edited JSON and store it as the host's recipe setting; returns (json, message).

    The transformer entry is stored for this variant only (`transformer_<variant>`), so editing
    the Original recipe never changes F1's transformer.
    """
    from framepack.errors import ModelError
    from framepack.models.recipe import ROLES, ComponentSource, Recipe

    try:
        data = json.loads(text or "")
    except ValueError as error:
        return text, error_html(f"Recipe: not valid JSON ({error})")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return text, error_html("Recipe: expected a JSON object of role -> source text")
    try:
        unknown = sorted(set(data) - set(ROLES))
        if unknown:
            raise ModelError(f"unknown role(s) {', '.join(unknown)}; known roles: {', '.join(ROLES)}")
        current = _recipe_for(host, variant)
        intended = Recipe(variant, {**current.components,
                                    **{role: ComponentSource.parse(value, role) for role, value in data.items()}})
    except FramePackError as error:
        return text, error_html(f"Recipe: {error}")
    stored = {(f"transformer_{variant}" if role == "transformer" else role): value for role, value in data.items()}
    merged = _merge_recipe_setting(host.option(RECIPE_KEY, ""), stored)
    if not store_setting(host, RECIPE_KEY, merged):
        return text, error_html("Recipe: this host keeps the recipe in Settings -> FramePack -> Model recipe")
    effective = recipe_json(host, variant)
    if effective != recipe_json_from(intended):
        return effective, error_html("Recipe stored, but this host does not read the recipe setting "
                                     "(its model comes from the command line)")
    return effective, info_html("Recipe stored; it is used from the next model load")


def recipe_json_from(recipe) -> str:
    return json.dumps({role: source.describe() for role, source in recipe.components.items()}, indent=2)


def _merge_recipe_setting(previous: Any, entries: Mapping[str, str]) -> str:
    """Add entries to the stored JSON recipe setting (a non-JSON stored setting is replaced)."""
    data: dict[str, str] = {}
    if isinstance(previous, str) and previous.strip().startswith("{"):
        try:
            loaded = json.loads(previous)
            if isinstance(loaded, dict):
                data = {str(k): str(v) for k, v in loaded.items()}
        except ValueError:
            pass
    data.update(entries)
    return json.dumps(data)


def reset_recipe(host, variant: str) -> tuple[str, str]:
    if not store_setting(host, RECIPE_KEY, ""):
        return recipe_json(host, variant), error_html("Recipe: this host keeps the recipe in Settings -> FramePack")
    return recipe_json(host, variant), info_html("Recipe reset to the defaults")
