"""One module per inbound surface."""
