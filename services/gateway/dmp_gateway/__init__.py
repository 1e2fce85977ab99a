"""Gateway: the public HTTP API (REST + OpenAPI) in front of the gRPC services."""
