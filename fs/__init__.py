"""sapwood's filesystem side: turning real trees into commits, and commits into trees.

Synchronous; imports only store's public API.
"""
