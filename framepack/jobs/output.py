"""Output writers for one job: engine frames -> raw file, interpolation, video, images.

Frames flow through once, in time order: the raw `.safetensors` keeps the generated frames
(what the model made), the interpolator adds in-between frames, and the video and image
writers receive the output frames. Every writer publishes its file only on a clean close; a
stopped job keeps its partial outputs only when `keep_incomplete` is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from framepack.engine.control import GenerationControl
from framepack.request.events import Done, Stage, Status
from framepack.request.limits import RANDOM_SEED
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions


@dataclass
class JobResult:
    done: Done
    video: Path | None = None
    frames: Path | None = None
    images: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    frame_count: int = 0
    """Frames the outputs received (a clip's frames included for an extension)."""


class OutputWriters:
    """Opens the writers at the first frame (its size is known only then) and fans frames out."""

    def __init__(self, folder: Path, request: GenerationRequest, options: OutputOptions, stem: str, work=None,
                 source=None, exact: bool = False, overwrite: bool = False, device: Any = "cpu", host: Any = None):
        from framepack.io.paths import unique_output_path

        self.folder, self.request, self.options, self.work = folder, request, options, work
        self.overwrite = overwrite

        def path(suffix: str) -> Path:  # exact: the name the user gave (publish never clobbers without overwrite)
            return folder / f"{stem}.{suffix}" if exact else unique_output_path(folder, stem, suffix)

        plan = request.plan()
        self.plan = plan
        self.metadata = {"settings": request.settings(), "output": options.model_dump(),
                         "plan": plan.summary(), "seed": request.seed}
        if source is not None and source.kind != "generate":  # a re-roll or extension says what it came from
            self.metadata[source.kind] = source.source
        self.video_path = path(options.container) if options.writes_video else None
        self.frames_path = path("safetensors") if options.save_frames else None
        self.stem = stem
        self._writers: list[Any] = []
        self._output_sink: Callable[[np.ndarray], None] | None = None
        self.video = self.raw = self.images = None
        self.upscaler = self.interpolator = None
        # loaded before sampling; `sdnext:...` names are the host's own tools, handed over by the host
        from framepack.request.output import is_host_model

        if options.upscale != 1.0 and (options.writes_video or options.save_images):
            from framepack.io.upscale import make_upscaler

            self.upscaler = (_host_tool(host, "host_upscaler", options.upscaler, options.upscale)
                             if is_host_model(options.upscaler) else
                             make_upscaler(options.upscaler, options.upscale, device))
        if plan.interpolation and options.interpolation_method == "rife":
            from framepack.io.interpolate import load_rife

            self.interpolator = (_host_tool(host, "host_interpolator", options.interpolation_model)
                                 if is_host_model(options.interpolation_model) else
                                 load_rife(options.interpolation_model, device))

    def __call__(self, frames: np.ndarray) -> None:
        if not self._writers:
            self._open(frames.shape[1], frames.shape[2])
        if self.raw is not None:
            self.raw.write(frames)
        if self._output_sink is not None:
            self._output_sink(frames)

    def _open(self, height: int, width: int) -> None:
        from framepack.io.images import FrameImageWriter
        from framepack.io.interpolate import InterpolatingSink
        from framepack.io.raw import RawFramesWriter
        from framepack.io.writer import VideoWriter

        options, plan = self.options, self.plan
        if self.frames_path is not None:
            self.raw = RawFramesWriter(self.frames_path, height, width, {
                "fps": plan.generated_fps, "generated_fps": plan.generated_fps, "interpolation": 0,
                "settings": self.metadata}, overwrite=self.overwrite, work=self.work).open()
            self._writers.append(self.raw)
        if self.upscaler is not None:  # the video and images are written at the upscaled size
            from framepack.io.upscale import scaled_size

            height, width = scaled_size(height, width, options.upscale)
        if self.video_path is not None:
            self.video = VideoWriter(self.video_path, plan.fps, codec=options.codec, options=options.codec_options,
                                     pix_fmt=options.pix_fmt, metadata=self.metadata, crf=options.crf,
                                     overwrite=self.overwrite, work=self.work).open()
            self._writers.append(self.video)
        if options.save_images:
            self.images = FrameImageWriter(self.folder, f"{self.stem}_frames", options.image_format,
                                           work=self.work).open()
            self._writers.append(self.images)
        targets = [w.write for w in (self.video, self.images) if w is not None]
        if targets:
            sink = targets[0] if len(targets) == 1 else (lambda batch: [write(batch) for write in targets])
            if plan.interpolation:  # the generated frames are upscaled once, then interpolated at output size
                sink = InterpolatingSink(sink, plan.interpolation, options.interpolation_method,
                                         model=self.interpolator).write
            if self.upscaler is not None:
                from framepack.io.upscale import UpscalingSink

                sink = UpscalingSink(sink, self.upscaler).write
            self._output_sink = sink

    def close(self) -> dict[str, Path]:
        """Publish every file; returns {kind: path}."""
        published = {}
        for kind, writer in (("frames", self.raw), ("video", self.video), ("images", self.images)):
            if writer is not None:
                published[kind] = writer.close()
        return published

    def abort(self) -> None:
        for writer in self._writers:
            writer.abort()


class JobFrames:
    """The job's frame sink: frames go to the output writers and, with checkpoints, to the frame log.

    The log keeps what the outputs already received, so a resumed job can write them again from
    the first frame: the clip's frames of an extension and the F1 model's frames (the inverted
    model's frames wait in its spill file until the end). `drop_first` skips the first generated
    frames (an original-model extension starts on the clip's own last frame).
    """

    def __init__(self, writers: "OutputWriters", log_path: Path | None, log_generated: bool, drop_first: int = 0):
        self.writers, self.log_path, self.log_generated, self.drop_first = writers, log_path, log_generated, drop_first
        self.log = None
        self.sent = 0

    def head(self, frames: np.ndarray) -> None:
        """Frames before the generated ones (a clip's): logged and written."""
        self._log(frames)
        self._write(frames)

    def resend(self, frames: int, size: tuple[int, int] | None) -> None:
        """Write again what an earlier run of this job had written (from its log, cut to `frames`)."""
        if size is None:
            return
        from framepack.io.framelog import FrameLog

        self.log = FrameLog.reopen(self.log_path, size[0], size[1], frames)
        for batch in self.log.iter_batches():
            self._write(batch)

    def __call__(self, frames: np.ndarray) -> None:
        if self.drop_first:
            dropped = min(self.drop_first, len(frames))
            frames, self.drop_first = frames[dropped:], self.drop_first - dropped
        if not len(frames):
            return
        if self.log_generated:
            self._log(frames)
        self._write(frames)

    def sync_log(self) -> tuple[int, tuple[int, int] | None]:
        """(frames on disk, frame size) of the log, for a checkpoint; (0, None) while there is none."""
        if self.log is None:
            return 0, None
        return self.log.sync(), (self.log.height, self.log.width)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def _log(self, frames: np.ndarray) -> None:
        if self.log_path is None:
            return
        if self.log is None:
            from framepack.io.framelog import FrameLog

            self.log = FrameLog(self.log_path, int(frames.shape[1]), int(frames.shape[2]))
        self.log.append(frames)

    def _write(self, frames: np.ndarray) -> None:
        self.writers(frames)
        self.sent += len(frames)


def _host_tool(host: Any, method: str, *args: Any) -> Any:
    if host is None or not hasattr(host, method):
        from framepack.errors import InputError

        raise InputError(f"{args[0]!r} names a tool of SD.Next; only a job run inside SD.Next can use it",
                         ("output", "upscaler" if method == "host_upscaler" else "interpolation_model"))
    return getattr(host, method)(*args)


def run_job(pipe, request: GenerationRequest, options: OutputOptions, folder: str | Path,
            control: GenerationControl | None = None, on_event: Callable[[object], None] | None = None,
            work=None, name: str | None = None, overwrite: bool = False, *, checkpoints=None, spec=None,
            resume=None, clip=None, host: Any = None) -> JobResult:
    """Generate and write the outputs; a stop keeps partial files only with keep_incomplete.

    Unfinished files (spill, partial video / raw frames / images) live in a work folder inside
    `folder` (framepack.io.workdir): `work` when the caller made one (the job runner), else one
    of its own, removed when this returns or raises. Work folders left by runs that crashed
    before, and that cannot be resumed, are removed first.

    `name`: the exact file stem (one path component) instead of `<filename>-<seed>`; `overwrite`
    replaces existing files of that name (without it, a name taken meanwhile gets a number). A
    job's `spec` carries its own name and overwrite.

    With `checkpoints` (the work folder's `JobCheckpoints`) the job's spec is written before the
    first section and a checkpoint after every section (and before the first). `resume` (a
    `SectionCheckpoint` of this job) continues from it: the frames already written come back
    from the frame log, then the loop goes on. `clip` (an `extend.ClipJob`) continues a clip.
    `host` gives the `sdnext:...` upscaler / RIFE of the output options (`Host.host_upscaler`, ...).
    """
    from framepack.engine.loop import run_generation
    from framepack.io.background import BackgroundSink
    from framepack.io.paths import sanitize_filename
    from framepack.io.workdir import WorkFolder
    from framepack.jobs.checkpoint import sweep_output_folder
    from framepack.models.lora import apply_loras, loaded_adapters, section_schedule

    if request.seed == RANDOM_SEED:
        raise ValueError("the request's seed is still -1: resolve it when the job is submitted (resolve_seed)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_output_folder(folder)
    if spec is not None:
        name, overwrite = spec.name, spec.overwrite
    if name is not None and (not name or Path(name).name != name or name in (".", "..")):
        raise ValueError(f"output name {name!r} must be one file name")
    if spec is not None:
        stem = spec.stem
    else:
        stem = name if name is not None else f"{sanitize_filename(options.filename)}-{request.seed}"
    schedule = None
    if request.loras or loaded_adapters(pipe):  # also unloads the previous job's LoRAs
        schedule = section_schedule(pipe, apply_loras(pipe, request.loras), request.plan())
    own_work = work is None
    work = WorkFolder(folder) if own_work else work
    events = _DoneLast(on_event)
    on_event = events if on_event is not None else None
    try:
        writers = OutputWriters(folder, request, options, stem, work=work, source=spec, exact=name is not None,
                                overwrite=overwrite, device=getattr(pipe, "_execution_device", "cpu"), host=host)
        encoder = BackgroundSink(writers)  # encodes section N while section N+1 samples
        extension = (clip is not None or (spec is not None and spec.kind == "extend"))
        frames = JobFrames(encoder, None if checkpoints is None else work.path / "frames.log",
                           log_generated=request.variant == "f1",
                           drop_first=1 if extension and request.variant == "original" else 0)
        try:
            start: dict[str, Any] = {}
            if resume is not None:
                frames.resend(resume.log_frames, resume.frame_size)
                start = dict(start_position=resume.position, context_state=resume.context_state,
                             assembler_state=resume.assembler_state, decoded_latents=resume.decoded_latents)
            elif clip is not None:
                request, start = clip.start(request, frames.head)
                writers.request = request
            if checkpoints is not None and resume is None:
                checkpoints.write_spec(replace(spec, request=request))
            hooks = getattr(control, "stage_hooks", None)  # a host's control may bring its stage hooks
            done = run_generation(pipe, request, _staged(frames, on_event, request.plan().interpolation), on_event,
                                  control=control, hooks=hooks,
                                  spill_dir=str(work.path), keep_spill=options.keep_checkpoints,
                                  on_section_state=None if checkpoints is None else _saver(checkpoints, frames),
                                  on_section_start=schedule, **start)
            encoder.drain()  # every frame written (a stopped run's too) before the files are published
        except BaseException:
            encoder.cancel()
            writers.abort()
            raise
        finally:
            frames.close()
        if (done.status != Status.COMPLETED and not options.keep_incomplete) or frames.sent == 0:
            writers.abort()
            events.release()
            return JobResult(done, frame_count=frames.sent)
        if on_event is not None:
            on_event(Stage("encode"))  # finishing the files (the encoder flushes its buffered frames)
        published = writers.close()
        events.release()
    finally:
        if own_work:
            work.close()
    return JobResult(done, published.get("video"), published.get("frames"), published.get("images"),
                     list(published.values()), frame_count=frames.sent)


class _DoneLast:
    """Relays the loop's events but holds its `Done` until the files are published, so a face
    never sees a stage after the job's end (the encoder finishes after the loop's last section)."""

    def __init__(self, emit: Callable[[object], None] | None):
        self.emit, self.done = emit, None

    def __call__(self, event: object) -> None:
        if isinstance(event, Done):
            self.done = event
        elif self.emit is not None:
            self.emit(event)

    def release(self) -> None:
        if self.done is not None and self.emit is not None:
            self.emit(self.done)
        self.done = None


def _saver(checkpoints, frames: JobFrames) -> Callable[[Any], None]:
    """The loop's `on_section_state`: the frame log on disk first, then the section's checkpoint."""

    def save(state) -> None:
        logged, size = frames.sync_log()
        checkpoints.save(state.position, state.context_state, state.assembler_state, state.decoded_latents,
                         logged, size)

    return save


def _staged(writers: Callable[[np.ndarray], None], on_event: Callable[[object], None] | None, interpolation: int):
    """The writers as the loop's sink, announcing the stage the frames enter (faces show every stage)."""
    if on_event is None:
        return writers
    stage = Stage("interpolate" if interpolation else "encode")

    def sink(frames: np.ndarray) -> None:
        on_event(stage)
        writers(frames)

    return sink
