"""The state's schema revisions, oldest first; revision ``000N`` is schema version N."""
