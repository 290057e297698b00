"""Video writer, codecs, raw frames, frame images and interpolation.

    codecs.py       which encoders open here, pixel formats, options, codec/container pairs
    writer.py       VideoWriter (PyAV, streaming, atomic) / Cv2VideoWriter, read_video_metadata
    reader.py       VideoFrames and open_frames: raw or video input behind one interface
    raw.py          RawFramesWriter / RawFrames: .safetensors frames, streamed and memory-mapped
    images.py       FrameImageWriter: numbered png/jpg/webp frames in a fresh folder
    interpolate.py  interpolate (pull) and InterpolatingSink (push): optical flow or blend
    paths.py        unique, sanitized output names and atomic publication
    fps.py          exact fractional frame rates

Importing this package loads nothing heavy; PyAV and OpenCV load inside the functions using them.
"""
