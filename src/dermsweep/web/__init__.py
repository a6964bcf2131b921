"""`dermsweep web`: classify a lesion photo in the browser (see server.py)."""
