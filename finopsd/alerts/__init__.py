"""Budget and provider error-rate alerts to webhooks (config ``alerts``)."""
