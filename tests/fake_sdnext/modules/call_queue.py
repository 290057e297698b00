"""Fake `modules.call_queue`: the one GPU lock every generation runs under."""

import threading

queue_lock = threading.Lock()
fake_acquisitions = 0  # test-only


class _CountingLock:
    """Behaves like the module lock; counts how often it was entered (test-only record)."""

    def __enter__(self):
        global fake_acquisitions
        queue_lock.acquire()
        fake_acquisitions += 1
        return self

    def __exit__(self, *exc):
        queue_lock.release()
        return False

    def acquire(self, *args, **kwargs):
        return queue_lock.acquire(*args, **kwargs)

    def release(self):
        queue_lock.release()

    def locked(self):
        return queue_lock.locked()


def get_lock():
    return _CountingLock()
