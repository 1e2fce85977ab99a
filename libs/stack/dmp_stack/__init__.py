"""Infrastructure resolution (MongoDB/FerretDB, NATS, SMTP sink) and the local process stack."""
