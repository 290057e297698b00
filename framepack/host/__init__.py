"""Host protocol: SD.Next adapter (the only code touching `modules.*`) and the standalone host."""
