"""sapwood's top layer: the command line and (later) the FUSE mount daemon."""
