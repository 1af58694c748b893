"""The stack as local redis-server processes. Imports ops and below; never components or cli."""
