"""Sans-IO SMTP state machines (h11 style): bytes in, events and bytes out, no sockets."""
