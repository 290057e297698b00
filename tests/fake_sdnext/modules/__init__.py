"""Fake SD.Next `modules` package (tests only): see tests/fake_sdnext/README.md."""
