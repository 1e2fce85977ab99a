"""What every DMP service shares: settings, logs, gRPC, auth, MongoDB, NATS, outbox, clock."""
