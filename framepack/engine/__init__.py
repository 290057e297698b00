"""Planner, conditioning, samplers, caches and the section loop. No UI, no files beyond what it is handed."""
