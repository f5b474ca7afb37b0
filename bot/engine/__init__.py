"""One message's turn: stored on arrival, then run through the flows in one transaction."""
