"""When things happen: the scheduler and the lock that elects one process to run it."""
