"""Fake `modules.options`: OptionInfo and the Options store (the same lookup rules as SD.Next)."""

from __future__ import annotations

from typing import Any, Callable

from modules.logger import log

secrets_pattern = ("_token", "_key", "_secret", "_password", "_version")


class OptionInfo:
    def __init__(self, default: Any = None, label="", component=None, component_args: dict | Callable[..., dict] | None = None,
                 onchange: Callable | None = None, section: tuple[str, ...] | None = None, refresh: Callable | None = None,
                 folder=False, submit=None, comment_before="", comment_after="", category_id=None, *args, **kwargs):  # noqa: B026
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.folder = folder
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.submit = submit
        self.dynamic = callable(component_args)

    def __repr__(self) -> str:
        return f"OptionInfo(default={self.default!r}, label={self.label!r}, section={self.section!r})"


def options_section(section_identifier: tuple[str, str], options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    for value in options_dict.values():
        value.section = section_identifier
    return options_dict


class Options:
    """`opts.<key>` and `opts.get(key)` read data first, then the registered default."""

    def __init__(self, options_templates: dict[str, OptionInfo] | None = None):
        options_templates = dict(options_templates or {})
        super().__setattr__("data_labels", options_templates)
        super().__setattr__("data", {k: v.default for k, v in options_templates.items()})
        super().__setattr__("secrets", {})

    def __getattr__(self, item):
        if item in ("data", "data_labels", "secrets"):
            return super().__getattribute__(item)
        return self.get(item)

    def get(self, item):
        if item in self.secrets:
            return self.secrets[item]
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        return super().__getattribute__(item)  # unknown keys raise AttributeError, as in SD.Next

    def __setattr__(self, key, value):
        if key in self.data_labels or key in self.data or key in self.secrets:
            if any(key.endswith(pattern) for pattern in secrets_pattern):
                self.secrets[key] = value
                return None
            self.data[key] = value
            return None
        return super().__setattr__(key, value)

    def set(self, key, value, run_callbacks=True):
        if key not in self.data_labels:
            return False
        old = self.get(key)
        setattr(self, key, value)
        info = self.data_labels[key]
        if run_callbacks and info.onchange is not None and old != value:
            try:
                info.onchange()
            except Exception as e:  # SD.Next logs a failing onchange and keeps the old value
                log.error(f"Error setting option: {key}={value} {e}")
                setattr(self, key, old)
                return False
        return True

    def add_option(self, key, info):
        self.data_labels[key] = info
