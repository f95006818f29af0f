"""sapwood: immutable, content-addressed commits of operating-system trees.

The public Python API. store/, fs/ and mountd/ are the layers beneath it.
"""
