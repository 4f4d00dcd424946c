"""The REST API (FastAPI): admins and players over HTTP; serves the web client later."""
