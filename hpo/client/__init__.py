"""The Python client of the hpo controller (httpx and the wire schemas only)."""

from ._client import Client, HPOClientError, Trial

__all__ = ["Client", "HPOClientError", "Trial"]
