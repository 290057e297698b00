"""Video writer, codecs, raw frames, frame images and interpolation."""
