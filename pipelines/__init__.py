"""The supply-chain pipeline: discover → validate → build → test → publish."""
