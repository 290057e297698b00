"""Fake `modules.progress`: task ids the web UI's progress bar polls for."""

import time

current_task = None
pending_tasks = {}
finished_tasks = []
fake_calls: list[tuple[str, str]] = []  # test-only


def start_task(id_task):
    global current_task
    fake_calls.append(("start", id_task))
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    fake_calls.append(("finish", id_task))
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)
    if len(finished_tasks) > 16:
        finished_tasks.pop(0)


def add_task_to_queue(id_job):
    fake_calls.append(("add", id_job))
    pending_tasks[id_job] = time.time()
