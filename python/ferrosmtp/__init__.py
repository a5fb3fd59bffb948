"""ferrosmtp: a Rust-accelerated SMTP toolkit."""
