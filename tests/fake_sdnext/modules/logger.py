"""Fake `modules.logger`: SD.Next logs through the standard logger named "sd"."""

import logging

log = logging.getLogger("sd")
