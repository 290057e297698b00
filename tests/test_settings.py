"""The settings table (framepack/request/settings.py) is the one source both hosts and the models read."""

from __future__ import annotations

from framepack.host.standalone import DEFAULT_SETTINGS
from framepack.models import offload, quantize
from framepack.request import limits
from framepack.request.settings import ATTENTION_CHOICES, SETTING_DEFAULTS, SETTINGS


def test_keys_are_unique_and_every_default_is_one_of_its_choices():
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)
    for setting in SETTINGS:
        assert setting.key.startswith("framepack_")
        if setting.choices is not None:
            assert setting.default in setting.choices, setting.key
        if setting.slider is not None:
            low, high, _ = setting.slider
            assert low <= setting.default <= high, setting.key


def test_the_choices_are_the_ones_the_request_and_the_models_accept():
    by_key = {s.key: s for s in SETTINGS}
    assert by_key["framepack_variant"].choices == limits.VARIANTS
    assert by_key["framepack_container"].choices == limits.CONTAINERS
    assert by_key["framepack_image_format"].choices == limits.IMAGE_FORMATS
    assert by_key["framepack_quantization"].choices == quantize.QUANT_METHODS
    assert ATTENTION_CHOICES == ("default", *offload.ATTENTION_BACKENDS)
    assert by_key["framepack_crf"].slider[1] <= limits.CRF_RANGE[1]
    assert by_key["framepack_teacache_threshold"].slider[1] <= limits.MAX_TEACACHE_THRESHOLD


def test_the_standalone_host_starts_from_the_same_defaults():
    assert {k: DEFAULT_SETTINGS[k] for k in SETTING_DEFAULTS} == SETTING_DEFAULTS
