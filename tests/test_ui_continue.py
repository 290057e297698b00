"""The tab's continuation and batch rules (framepack.ui.continue_actions), without a browser.

The queue keeps its jobs in a job store and runs none here (`run_here=False`): what is checked is
what the controls queue, refuse and show, not the generation (the browser tests run those).
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from framepack.host.standalone import StandaloneHost
from framepack.jobs.handle import JobHandle
from framepack.jobs.queue import JobQueue
from framepack.jobs.record import JobRecord
from framepack.jobs.store import JobStore
from framepack.request.events import Status
from framepack.request.output import OutputOptions
from framepack.ui import continue_actions as actions
from framepack.ui import logic

FAST = {"resolution": 240, "steps": 2, "latent_window_size": 3, "duration": 0.4, "teacache": False}


@pytest.fixture
def host(tiny_model_dir, tmp_path):
    return StandaloneHost(output_dir=tmp_path / "out", model=str(tiny_model_dir), settings={"ui_defaults": FAST})


@pytest.fixture
def queue(host):
    """Jobs are queued in the store and never run here."""
    queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()), run_here=False)
    yield queue
    queue.shutdown()


@pytest.fixture
def uploaded(tmp_path):
    """Files as Gradio keeps uploads: in its upload folder, one sub-folder per file."""
    folder = tmp_path / "gradio"

    def put(name: str, data: bytes) -> Path:
        path = folder / f"{abs(hash(name)):x}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    put.folder = folder
    return put


def png(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4(width: int = 64, height: int = 48, frames: int = 16) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.full((height, width, 3), index * 8, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def tab_values(host, **changes):
    return {**logic.default_values(host), "prompt": "the tab's prompt", **changes}


def text(html: str) -> str:
    import html as html_module
    import re

    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


# ------------------------------------------------------------------------------------------ uploads

def test_only_files_gradio_received_are_read(uploaded, tmp_path):
    inside = uploaded("cat.png", png())
    assert [u.name for u in actions.uploads([str(inside)], uploaded.folder, "Batch files")] == ["cat.png"]

    class Payload:  # Gradio 3's file payload: a client may name any server path as an "uploaded" file
        name = str(inside)
        orig_name = "/etc/passwd"

    with pytest.raises(actions.InputError, match=r"Batch files: 'passwd' is not a file uploaded to this page"):
        actions.uploads([Payload()], uploaded.folder, "Batch files")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    with pytest.raises(actions.InputError, match="not a file uploaded"):
        actions.uploads(str(outside), uploaded.folder, "Video to continue")
    hidden = uploaded(".env.txt", b"x")
    with pytest.raises(actions.InputError, match="not an acceptable file name"):
        actions.uploads([str(hidden)], uploaded.folder, "Batch files")
    assert actions.uploads(None, uploaded.folder, "Batch files") == []


# ------------------------------------------------------------------------------------------ batches

def test_images_with_captions_make_one_entry_each_with_its_caption(host, uploaded):
    files = actions.uploads([str(uploaded("b.png", png(seed=2))), str(uploaded("a.png", png(seed=1))),
                             str(uploaded("a.txt", "a cat jumps\n".encode()))], uploaded.folder, "Batch files")
    entries = actions.batch_entries(files, tab_values(host), host)
    assert [e.label for e in entries] == ["a.png", "b.png"]  # by name
    assert [e.request.prompt for e in entries] == ["a cat jumps", "the tab's prompt"]  # no caption: the tab's prompt
    assert [e.options.filename for e in entries] == ["a", "b"]
    assert entries[0].request.image.shape[:2] == (48, 64) and entries[0].request.resolution == 240


def test_a_prompt_list_and_jsonl_make_one_entry_a_line(host, uploaded):
    listed = uploaded("prompts.txt", b"# a comment\nfirst prompt\n\nsecond prompt\n")
    start = uploaded("start.png", png())
    entries = actions.batch_entries(actions.uploads([str(listed), str(start)], uploaded.folder, "Batch files"),
                                    tab_values(host), host)
    assert [(e.label, e.request.prompt) for e in entries] == [("prompts.txt line 2", "first prompt"),
                                                              ("prompts.txt line 4", "second prompt")]
    assert all(e.request.image.shape[:2] == (48, 64) for e in entries)  # the one uploaded image starts each

    lines = [{"prompt": "one", "seed": 5, "image": "b.png"}, {"prompt": "two", "duration": 0.8}]
    jsonl = uploaded("jobs.jsonl", "\n".join(json.dumps(line) for line in lines).encode())
    files = actions.uploads([str(jsonl), str(uploaded("b.png", png(80, 64))), str(uploaded("c.png", png()))],
                            uploaded.folder, "Batch files")
    image = np.zeros((32, 32, 3), np.uint8)
    entries = actions.batch_entries(files, tab_values(host, image=image), host)
    assert [e.request.seed for e in entries] == [5, -1]
    assert entries[0].request.image.shape[:2] == (64, 80) and entries[1].request.image.shape[:2] == (32, 32)
    assert entries[1].request.plan().num_sections == 2


def test_bad_batch_files_are_refused_naming_the_control_and_the_file(host, uploaded):
    def refused(files, **values):
        with pytest.raises(actions.InputError) as caught:
            actions.batch_entries(actions.uploads([str(uploaded(name, data)) for name, data in files],
                                                  uploaded.folder, "Batch files"), tab_values(host, **values), host)
        return actions.problem_text(caught.value)

    assert "Batch files: evil.exe: not an image" in refused([("evil.exe", b"MZ"), ("a.png", png())])
    assert "Batch files: a.png: not a readable image" in refused([("a.png", b"not a png")])
    assert "too large" in refused([("huge.png", _bomb_header())])
    assert "not UTF-8" in refused([("a.png", png()), ("a.txt", b"\xff\xfe\xfa")])
    assert "Batch files: a.txt is 65537 bytes; the limit is 65536 bytes" in refused([("a.png", png()),
                                                                    ("a.txt", b"x" * (actions.MAX_CAPTION_BYTES + 1))])
    assert "give one prompt list" in refused([("one.txt", b"a"), ("two.jsonl", b"{}")])
    jsonl = refused([("jobs.jsonl", b'{"prompt": "x", "image": "../../etc/passwd"}\n[1]\n')])
    assert "jobs.jsonl line 2: expected a JSON object" in jsonl
    unknown = refused([("jobs.jsonl", b'{"prompt": "x", "image": "missing.png"}\n{"output_dir": "/etc"}\n'
                                      b'{"loras": ["/etc/passwd"]}\n')])
    assert "jobs.jsonl line 1: image 'missing.png' is none of the uploaded images" in unknown
    assert "jobs.jsonl line 2: unknown setting(s) output_dir" in unknown
    assert "jobs.jsonl line 3: LoRA:" in unknown  # LoRAs only by name from the server's LoRA folder
    bad_value = refused([("jobs.jsonl", b'{"prompt": "x", "duration": -3}\n')], image=np.zeros((32, 32, 3), np.uint8))
    assert "jobs.jsonl line 1: Duration:" in bad_value
    assert "Batch files: upload images" in refused([])
    many = b"\n".join(b"prompt %d" % n for n in range(actions.MAX_BATCH_JOBS + 1))
    assert f"holds {actions.MAX_BATCH_JOBS + 1} jobs; a batch holds at most {actions.MAX_BATCH_JOBS}" in \
        refused([("many.txt", many)])


def test_a_batch_s_images_have_a_pixel_budget(host, uploaded, monkeypatch):
    monkeypatch.setattr(actions, "MAX_BATCH_PIXELS", 64 * 48 * 2)
    files = actions.uploads([str(uploaded(f"{n}.png", png())) for n in range(3)], uploaded.folder, "Batch files")
    with pytest.raises(actions.InputError, match="Batch files: the images are too large together"):
        actions.batch_entries(files, tab_values(host), host)
    assert len(actions.batch_entries(files[:2], tab_values(host), host)) == 2


def _bomb_header() -> bytes:
    """A real PNG header declaring 60000x60000 pixels (nothing behind it is decoded)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return header + struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))


def test_a_batch_is_queued_listed_and_cancelled_as_one(host, queue, uploaded):
    files = [str(uploaded("a.png", png(seed=1))), str(uploaded("b.png", png(seed=2))),
             str(uploaded("b.txt", b"a boat"))]
    line = actions.queue_batch(host, queue, files, tab_values(host), "holiday", upload_dir=uploaded.folder)
    assert "queued: 2 job(s)" in text(line), line
    jobs = [job for job in queue.list() if job.batch]
    assert len(jobs) == 2 and {job.record.source["item"] for job in jobs} == {"a.png", "b.png"}
    batch = jobs[0].batch
    assert queue.store.batch(batch)["name"] == "holiday"
    panel = logic.jobs_html(queue)
    assert f'data-fpk-job-action="cancel-batch" data-fpk-job="{batch}"' in panel
    assert "2 queued" in text(panel) and "a.png" in text(panel) and "“holiday”" in text(panel)
    assert "cancelled: 2 job(s) removed" in text(actions.cancel_batch(queue, batch))
    assert all(queue.get(job.id).status == Status.CANCELLED for job in jobs)
    assert "cancel-batch" not in logic.jobs_html(queue)  # nothing left to cancel
    assert "no batch with id" in text(actions.cancel_batch(queue, "nope"))

    refused = actions.queue_batch(host, queue, [str(uploaded("c.png", png()))], tab_values(host, steps=0),
                                  upload_dir=uploaded.folder)
    assert "Batch: c.png: Steps:" in text(refused) and len(queue.list()) == 2  # nothing queued


# ------------------------------------------------------------------------------------------ continue a video

def test_extend_fields_leave_what_the_clip_decides(host):
    values = tab_values(host, image=np.zeros((32, 32, 3), np.uint8), variant="original")
    fields = actions.extend_fields(values, "auto")
    assert not {"image", "blank_start", "fps", "interpolation", "variant", "end_image", "keyframes"} & set(fields)
    assert fields["prompt"] == "the tab's prompt" and fields["duration"] == FAST["duration"]
    assert actions.extend_fields(values, "f1")["variant"] == "f1"


def test_continue_an_uploaded_video_queues_an_extension_inside_the_output_folder(host, queue, uploaded):
    clip = uploaded("clip.mp4", mp4())
    line = actions.extend_clip(host, queue, tab_values(host, duration=0.8), upload=str(clip),
                               upload_dir=uploaded.folder)
    assert "queued: continues clip.mp4" in text(line) and "16 clip frames + 24 new" in text(line), line
    job = next(job for job in queue.list() if job.record.kind == "extend")
    assert job.record.source["upload"] == "clip.mp4" and job.request.variant == "f1"
    out = Path(host.video_dir()).resolve()
    assert job.work is not None and out in Path(job.work.path).resolve().parents  # the upload's copy: inside

    not_video = uploaded("notes.txt", b"hello")
    assert text(actions.extend_clip(host, queue, tab_values(host), upload=str(not_video),
                                    upload_dir=uploaded.folder)).startswith("Continue: Video to continue: notes.txt")
    fake = uploaded("fake.mp4", b"\x00" * 64)
    refused = text(actions.extend_clip(host, queue, tab_values(host), upload=str(fake), upload_dir=uploaded.folder))
    assert refused.startswith("Continue: Video to continue: fake.mp4 is not a video") and "clip.input" not in refused
    assert "upload a video" in text(actions.extend_clip(host, queue, tab_values(host), upload=None,
                                                         upload_dir=uploaded.folder))
    assert "Duration" in text(actions.extend_clip(host, queue, tab_values(host, duration=-1), upload=str(clip),
                                                  upload_dir=uploaded.folder))
    assert "no job with id" in text(actions.extend_clip(host, queue, tab_values(host), job_id="nope"))
    assert sum(1 for job in queue.list() if job.record.kind == "extend") == 1  # refusals queue nothing
    from framepack.io.workdir import WORK_DIR_NAME

    assert [p.name for p in (out / WORK_DIR_NAME).iterdir()] == [job.id]  # and leave no copy of their upload


# ------------------------------------------------------------------------------------------ resume, re-roll, panel

def finished(status: Status, **record) -> JobHandle:
    return JobHandle.finished_from(JobRecord(status=status, sections=4, **record), OutputOptions())


def test_the_jobs_panel_offers_what_each_finished_job_can_do(tmp_path):
    def actions_of(job):
        return [b.split('data-fpk-job-action="')[1].split('"')[0] for b in actions.continue_buttons(job)]

    work = str(tmp_path)
    assert actions_of(finished(Status.INTERRUPTED, resumable=True, checkpoint=work, sections_done=2,
                               outputs={"video": "v.mp4"})) == ["resume", "reroll", "extend"]
    assert actions_of(finished(Status.FAILED, resumable=True, checkpoint=work)) == ["resume", "reroll"]
    assert actions_of(finished(Status.COMPLETED, checkpoint=work, outputs={"frames": "f.safetensors"})) == \
        ["reroll", "extend"]
    assert actions_of(finished(Status.COMPLETED, outputs={"video": "v.mp4"})) == ["extend"]
    assert actions_of(finished(Status.INTERRUPTED)) == [] and actions_of(finished(Status.CANCELLED)) == []
    running = finished(Status.RUNNING, resumable=True, checkpoint=work)
    assert actions_of(running) == []
    hostile = finished(Status.INTERRUPTED, resumable=True, checkpoint=work)
    hostile.record.id = '"><script>x</script>'
    assert "<script>" not in "".join(actions.continue_buttons(hostile))


def test_resume_and_reroll_say_why_they_cannot(host, queue):
    assert "no job with id" in text(actions.resume_job(queue, "nope"))
    assert "no job given" in text(actions.resume_job(queue, ""))
    assert "choose a job" in text(actions.reroll_job(queue, "", 2))
    assert "Re-roll from section: give a section number" in text(actions.reroll_job(queue, "abc", 0))
    assert "Re-roll from section" in text(actions.reroll_job(queue, "abc", "x"))
    assert "Seed: a whole number" in text(actions.reroll_job(queue, "abc", 2, 1.5))
    assert "no job with id" in text(actions.reroll_job(queue, "abc", 2, -1))
