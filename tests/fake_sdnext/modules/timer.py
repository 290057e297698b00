"""Fake `modules.timer`: named timers; `process.add(name, seconds)` accumulates."""

import time


class Timer:
    def __init__(self, profile=False):
        self.start = time.time()
        self.records = {}
        self.total = 0
        self.profile = profile

    def elapsed(self, reset=True):
        end = time.time()
        res = end - self.start
        if reset:
            self.start = end
        return res

    def add(self, name, t):
        if name not in self.records:
            self.records[name] = 0
        self.records[name] += t

    def get(self, name):
        return self.records.get(name, 0)

    def reset(self):
        self.__init__(self.profile)

    def dct(self, min_time=0):
        return {k: round(v, 4) for k, v in self.records.items() if v >= min_time}


startup = Timer()
process = Timer()
launch = Timer()
init = Timer()
load = Timer()
