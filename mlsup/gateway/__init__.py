"""The OpenAI-compatible HTTP gateway: a sidecar process of the supervisor (``[http] listen`` or
``mlsup start --http ADDR``) that serves the OpenAI API and Prometheus metrics, through the async
proxy. Only :mod:`mlsup.gateway.settings` is imported by the supervisor itself; the rest needs the
``gateway`` extra (FastAPI, uvicorn, prometheus-client, python-multipart)."""
