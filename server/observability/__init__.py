"""What every layer may use to be seen: metrics, traces, logs and request ids (no gRPC, no torch)."""
