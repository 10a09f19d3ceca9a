"""Vulnerability scanning: the finding model, the embedded OSV matcher, Grype and Trivy adapters, VEX."""
