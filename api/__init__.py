"""The FastAPI application: REST, authentication and roles, and the dashboard it serves."""

from api.app import create_app

__all__ = ["create_app"]
