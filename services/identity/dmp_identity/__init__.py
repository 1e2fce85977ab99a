"""Identity: directory of people and systems, login with one-time codes, tokens and JWKS."""
