"""replica: log shipping between a primary and a secondary eventmail instance over gRPC."""
