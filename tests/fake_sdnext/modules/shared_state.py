"""Fake `modules.shared_state.State`: the fields and methods the extension uses, same semantics."""

from __future__ import annotations

import datetime
import re
import time
import uuid

from modules.logger import log


class State:
    skipped = False
    interrupted = False
    paused = False
    job = ""
    job_no = 0
    job_count = 0
    batch_no = 0
    batch_count = 0
    frame_count = 0
    total_jobs = 0
    job_timestamp = "0"
    _sampling_step = 0
    sampling_steps = 0
    current_image = None
    current_image_sampling_step = -1
    id_live_preview = 0
    textinfo = None
    api = False
    disable_preview = False
    preview_job = -1
    time_start = None
    duration = None

    def __init__(self):
        self.id = 0
        self.results = []
        self.state_history = []
        self.job_history = 0
        # test-only records (not in SD.Next)
        self.fake_steps: list[tuple[int, int]] = []
        self.fake_textinfo: list[str] = []
        self.fake_previews: list[object] = []

    def __setattr__(self, key, value):
        super().__setattr__(key, value)
        if key == "textinfo" and value:
            self.fake_textinfo.append(value)
        elif key == "current_image" and value is not None:
            self.fake_previews.append(value)

    @property
    def sampling_step(self):
        return self._sampling_step

    @sampling_step.setter
    def sampling_step(self, value):
        self._sampling_step = value
        self.fake_steps.append((value, self.sampling_steps))

    def skip(self):
        log.debug("State: skip requested")
        self.skipped = True

    def interrupt(self):
        log.debug("State: interrupt requested")
        self.interrupted = True

    def pause(self):
        self.paused = not self.paused

    def find(self, task_id: str):
        for job in reversed(self.state_history):
            if job["id"] == task_id:
                return job
        return None

    def history(self, op: str, task_id: str | None = None, results: list | None = None):
        self.state_history.append({"id": task_id or self.id, "job": self.job.lower(), "op": op.lower(),
                                   "timestamp": self.time_start, "duration": self.duration,
                                   "outputs": list(results or [])})

    def outputs(self, results):
        if isinstance(results, list):
            self.results += results
        else:
            self.results.append(results)
        if len(self.results) > 0:
            self.history("output", self.id, results=self.results)

    def get_id(self, task_id: str | None = None):
        if task_id is None or task_id == 0:
            task_id = uuid.uuid4().hex[:15]
        if not isinstance(task_id, str):
            task_id = str(task_id)
        match = re.search(r"\((.*?)\)", task_id)
        return match.group(1) if match else task_id

    def clear(self):
        self.id = ""
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.frame_count = 0
        self.preview_job = -1
        self.duration = None
        self.paused = False
        self.results = []

    def begin(self, title="", task_id=0, api=None):
        self.clear()
        self.interrupted = self.interrupted if title.startswith("Save") else False
        self.skipped = False
        self.job_history += 1
        self.total_jobs += 1
        self.current_image = None
        self.current_image_sampling_step = -1
        self.id_live_preview = 0
        self.id = self.get_id(task_id)
        self.job = title
        self.job_count = 1
        self.batch_no = 0
        self.batch_count = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self._sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.api = api if api is not None else False
        self.time_start = time.time()
        self.history("begin", self.id)
        return self.id

    def end(self, task_id=None, api=None):
        if task_id is not None:
            prev_job = self.find(task_id)
            if prev_job is not None:
                self.id = prev_job["id"]
                self.job = prev_job["job"]
                self.duration = round(time.time() - prev_job["timestamp"], 3) if prev_job["timestamp"] else None
        self.time_start = time.time()
        if api is not None:
            self.api = api
        self.history("end", task_id or self.id)
        self.clear()

    def step(self, step: int = 1):
        self.sampling_step += step
