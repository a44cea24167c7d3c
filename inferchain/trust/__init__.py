"""Trust: activation commitments, the validator that re-runs sampled sessions, signed verdicts and slashing.

- `commitment`: the node's locality-sensitive sketch of a session's span outputs (top-k values and indices plus
  random projections per token, 16 bytes per token: 512 bytes per 32 tokens per span) bound to a hash of the
  exact inputs it received; its keccak digest is the receipt's `activationCommitment`.
- `validator`: re-runs a session's recorded inputs through the same span and compares within a calibrated
  tolerance; mismatches become EIP-712 verdicts that a quorum submits to `NodeStaking.slashByVerdicts`.
- `adversary`: test-only misbehaviour a node process can be started with (noise, skipped layers), for the
  adversarial suite.

Why not the PyPI `toploc` package: its 0.1.6 wheel is a compiled torch extension built against another torch ABI
and fails to import with the torch this project pins (undefined symbol in `poly.*.so`); see docs/trust.md.
"""
