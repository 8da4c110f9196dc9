"""The clinician web interface (static assets served by the API)."""
