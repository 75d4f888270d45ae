"""Contact-center CTI events (platform-neutral JSON, schemas/cti.py), HMAC-signed."""
