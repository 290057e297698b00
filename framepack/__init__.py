"""FramePack for SD.Next: HunyuanVideo FramePack image-to-video engine, outputs and faces.

Importing this package is cheap: heavy libraries (torch, diffusers) load only inside the
modules that need them, so SD.Next can import the entry script at startup.
"""

__version__ = "0.1.0"
