"""Meta webhooks: WhatsApp Cloud API and Messenger (X-Hub-Signature-256)."""
