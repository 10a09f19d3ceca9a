"""An embedded, Rekor-compatible transparency log, so every signature can be logged without a network service.

The pieces are pure and small so that each can be checked on its own: `merkle` holds the RFC 6962 / RFC 9162
hashing, proof construction and proof verification; `storage` keeps the append-only tree in one SQLite file
with every perfect subtree stored, so that roots and proofs cost O(log n) lookups; checkpoints (signed notes)
and the Rekor entry kinds sit beside them. The log service and its client are built on top later; importing
this package pulls in nothing heavy.
"""
