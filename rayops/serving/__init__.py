"""The promoted model behind a Ray Serve HTTP API (FastAPI ingress): see app.py for the routes."""
