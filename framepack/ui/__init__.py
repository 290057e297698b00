"""The FramePack tab (Gradio 3.43): `create_ui(host, queue) -> gr.Blocks`.

`framepack.ui.logic` holds the tab's rules as plain Python (no Gradio import), so they are
tested without a browser; `framepack.ui.tab` builds the Blocks. Gradio is imported only when
`create_ui` is called.
"""

from __future__ import annotations

__all__ = ["create_ui"]


def create_ui(host, queue, **options):
    """The FramePack tab for `host` submitting to `queue` (see framepack.ui.tab.create_ui)."""
    from framepack.ui.tab import create_ui as build

    return build(host, queue, **options)
