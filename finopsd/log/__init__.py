"""The request log: store, schema and migrations, text for the index, sessions, the recorder hook."""
