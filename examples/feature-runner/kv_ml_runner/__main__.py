"""``python -m kv_ml_runner``: serve the runner on the port its services.yaml declares."""

from kv_ml_runner.service import app
from mlsup.service import serve

serve(app, feature="knowledge-verification", service="ml-runner")
