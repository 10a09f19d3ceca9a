"""GitOps promotion of agent digests through stages, gated by canary analysis."""
