"""The export and push stages: a complete adapter folder, a verified 16-bit merge, and the Hub upload."""
