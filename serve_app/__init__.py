"""The HTTP front door: a FastAPI app served by Ray Serve."""
