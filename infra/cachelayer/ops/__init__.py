"""Operations on a live deployment (redis-py, redis-cli). Imports render and below; never sandbox, components or cli."""
