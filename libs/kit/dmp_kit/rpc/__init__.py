"""gRPC plumbing shared by every service: status mapping, interceptors, server, client options."""
