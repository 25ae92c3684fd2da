"""Learning from users' moves: moves read from our own headers, their store, and proposals."""
