"""Twilio webhooks: Programmable Messaging (SMS) and Voice, signed with X-Twilio-Signature."""
