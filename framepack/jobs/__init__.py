"""Running jobs (layer 4): submission checks, the job record and handle, the runner, the queue, outputs.

    checks.py         what a submission needs checked with io: codec, container, encoder options, LoRA files
    output.py         `run_job`: engine frames -> raw frames, interpolation, video, images
    queue.py          `JobQueue`: jobs in order on one worker thread, shared through the job store
    continuation.py   the queue's resume, re-roll, extend, retry, discard and recovery
"""
