"""The vocabulary every layer shares (layer 0): what a user may ask for and what a job reports.

    limits.py    every range and choice, once
    images.py    image bytes / arrays / PIL images -> RGB uint8 arrays (never paths, never base64)
    planner.py   the plan: sections, frames, times, each section's prompt, keyframe, LoRA weights (no torch)
    schedule.py  WHEN and the section-prompt schedule: parsing, and placing them on sections
    model.py     the frozen `GenerationRequest` (+ `Keyframe`, `LoraSpec`) and `build_request`
    output.py    `OutputOptions`: what to write, with the checks that need no codec probe
    events.py    what a running generation reports, and the one `Status` vocabulary
    host.py      the `Host` protocol: the services a host gives the extension
    settings.py  the FramePack settings (keys, defaults, labels, choices) every host reads

Nothing here imports torch, the models, io, the engine or a host; errors carry their field
(`framepack.errors`). Importing this package imports none of its modules.
"""
