"""What every DMP service shares: settings, logging, gRPC bootstrap, auth, MongoDB, NATS, outbox, clock."""
