"""The FastAPI controller: ``create_app`` builds it against the database it is given."""

from .app import create_app

__all__ = ["create_app"]
