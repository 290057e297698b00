"""The tab's rules in one namespace (no Gradio here, so every rule is testable).

The rules live by concern; this module only gathers their public names for the tab, the page
routes and the tests:

- `framepack.ui.values`: controls' names, choices (from `framepack.request.limits`), defaults,
  validation into a request, settings back into control values;
- `framepack.ui.plan_view`: the plan box, the mode line, keyframes;
- `framepack.ui.progress_view`: progress box, result block, status lines, live preview, jobs panel;
- `framepack.ui.actions`: Generate (submit and follow), Stop / Skip / Pause, codecs;
- `framepack.ui.model_actions`: the Model accordion (load, unload, settings, recipe);
- `framepack.ui.presets`: Load settings (video, history, presets) and named presets;
- `framepack.ui.media_values`: the LoRA picker, upscaling, RIFE model and Tiny VAE values (their
  controls: `framepack.ui.media_controls`);
- `framepack.ui.continue_actions` (not gathered here: the jobs panel, the page routes and
  `framepack.ui.continue_controls` use it): Resume, Re-roll, Continue a video, batches.
"""

from __future__ import annotations

from framepack.errors import FramePackError, InputError  # noqa: F401
from framepack.ui.actions import *  # noqa: F401,F403
from framepack.ui.actions import KEEP, PAGE_TASKS, PageTasks, Update  # noqa: F401
from framepack.ui.model_actions import *  # noqa: F401,F403
from framepack.ui.plan_view import *  # noqa: F401,F403
from framepack.ui.progress_view import *  # noqa: F401,F403
from framepack.ui.progress_view import _final_marker  # noqa: F401
from framepack.ui.values import *  # noqa: F401,F403
from framepack.ui.values import _esc, _number, _whole, log  # noqa: F401
