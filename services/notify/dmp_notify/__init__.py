"""Notify: one-time code delivery, and (later) notifications, inbox and preferences."""
