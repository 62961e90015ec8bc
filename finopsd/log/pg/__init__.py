"""What only the PostgreSQL log store needs: its schema, its dialect of the writer's statements, its store."""
