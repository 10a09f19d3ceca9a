"""The validating admission webhook (FastAPI over TLS); filled by the admission issue."""
