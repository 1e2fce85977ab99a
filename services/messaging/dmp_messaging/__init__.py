"""DMP messaging service."""
