"""Typed, validated stack settings (no Pulumi import). Imports the root and cdn.settings."""
