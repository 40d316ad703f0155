"""Environments: named recipes of session images and the web apps they offer."""
