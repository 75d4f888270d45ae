"""Email: an SMTP server (aiosmtpd) accepting inbound mail as raw events."""
