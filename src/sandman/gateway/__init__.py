"""The SSH gateway: ``ssh user@gateway`` lands in that user's session container."""
