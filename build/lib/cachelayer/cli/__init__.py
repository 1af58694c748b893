"""The `cachelayer` command: one typer app, one module per area. Nothing imports cli."""
