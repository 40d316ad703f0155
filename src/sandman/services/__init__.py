"""Sandman's behaviour: sessions (create/extend/end), the reaper and the reconciler."""
