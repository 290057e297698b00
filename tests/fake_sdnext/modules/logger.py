"""Fake `modules.logger`: SD.Next logs through the standard logger named "sd"."""

import logging

TRACE = 5
logging.addLevelName(TRACE, "TRACE")


class SdLogger(logging.Logger):
    def trace(self, msg, *args, **kwargs):
        if self.isEnabledFor(TRACE):
            self._log(TRACE, msg, args, **kwargs)

    def quiet(self, quiet: bool, msg, *args, **kwargs):
        if not quiet:
            self.info(msg, *args, **kwargs)


_previous = logging.getLoggerClass()
logging.setLoggerClass(SdLogger)
try:
    log = logging.getLogger("sd")
finally:
    logging.setLoggerClass(_previous)
if not isinstance(log, SdLogger):  # an earlier getLogger("sd") made a plain logger
    log.trace = lambda msg, *args, **kwargs: log.log(TRACE, msg, *args, **kwargs)
    log.quiet = lambda quiet, msg, *args, **kwargs: None if quiet else log.info(msg, *args, **kwargs)


def get_log():
    return log
