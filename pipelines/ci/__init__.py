"""Pull-request checks: `agentfactory ci check` and what it reports to GitHub Actions."""
