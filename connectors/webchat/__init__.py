"""Web chat: conversation events from a chat widget or platform, with HMAC-proved visitors."""
