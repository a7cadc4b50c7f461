"""The example app."""
