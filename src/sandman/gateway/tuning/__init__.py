"""Replacements for asyncssh functions, grouped by area.

Registered, checked and installed by :mod:`sandman.gateway.asyncssh_tuning`,
which is the only public entry point.
"""
